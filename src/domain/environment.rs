// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The `Environment` entity: one isolated microVM handed to an agent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InvalidId, InvalidTransition, Runtime, Status, validate_id};

/// What was found inside an environment's VM when it was probed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// When the probe ran; `None` if it never did.
    pub detected_at: Option<DateTime<Utc>>,
    /// The `PATH` the probe saw.
    pub path: String,
    /// The Python interpreter command, if any (`python3`, …).
    pub python_cmd: Option<String>,
    /// The pip command, if any.
    pub pip_cmd: Option<String>,
    /// The Node.js command, if any.
    pub node_cmd: Option<String>,
    /// The npm command, if any.
    pub npm_cmd: Option<String>,
    /// Python's `venv` module is usable.
    pub has_venv: bool,
    /// `apk` (Alpine) is present.
    pub has_apk: bool,
    /// `apt-get` (Debian, Ubuntu) is present.
    pub has_apt_get: bool,
    /// `dnf` (Fedora) is present.
    pub has_dnf: bool,
    /// `yum` (older Red Hat) is present.
    pub has_yum: bool,
    /// `zypper` (openSUSE) is present.
    pub has_zypper: bool,
    /// Commands run as root.
    pub is_root: bool,
}

/// An isolated microVM environment, as the repository stores it.
///
/// Every field is public data except [`status`](Self::status), which only
/// moves through [`transition_to`](Self::transition_to) so the lifecycle
/// cannot be skipped.
///
/// ```
/// use waggle_store::domain::{Environment, Runtime, Status};
///
/// let mut env = Environment::new("env-1", "scratch", Runtime::Python);
/// assert_eq!(env.status(), Status::Creating);
/// env.transition_to(Status::Running)?;
/// assert!(env.is_running());
/// assert!(env.transition_to(Status::Creating).is_err());
/// # Ok::<(), waggle_store::domain::InvalidTransition>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The key: see [`validate_id`] for what a store accepts.
    pub id: String,
    /// A human-readable name; any UTF-8.
    pub name: String,
    /// The runtime the VM provides.
    pub runtime: Runtime,
    status: Status,
    /// The host port forwarded to the VM's SSH server (0 = none yet).
    pub ssh_port: u16,
    /// When the environment was created (UTC, nanosecond precision).
    pub created_at: DateTime<Utc>,
    /// When the environment was last used (UTC, nanosecond precision).
    pub last_used: DateTime<Utc>,
    /// Idle time after which the environment expires; zero = never.
    pub inactivity_timeout: Duration,
    /// What the probe found inside the VM.
    pub capabilities: Capabilities,
    /// Whether [`capabilities`](Self::capabilities) has been filled in.
    pub capabilities_detected: bool,
}

impl Environment {
    /// A new environment in [`Status::Creating`], created and last used now,
    /// with no SSH port, no timeout and no capabilities detected yet.
    pub fn new(id: impl Into<String>, name: impl Into<String>, runtime: Runtime) -> Self {
        Self::new_at(id, name, runtime, Utc::now())
    }

    /// Like [`new`](Self::new) with an explicit clock reading.
    pub fn new_at(
        id: impl Into<String>,
        name: impl Into<String>,
        runtime: Runtime,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            runtime,
            status: Status::Creating,
            ssh_port: 0,
            created_at: now,
            last_used: now,
            inactivity_timeout: Duration::ZERO,
            capabilities: Capabilities::default(),
            capabilities_detected: false,
        }
    }

    /// The current lifecycle status.
    pub const fn status(&self) -> Status {
        self.status
    }

    /// Moves to `to` if the lifecycle allows it (see
    /// [`Status::can_transition_to`]); otherwise leaves `self` unchanged.
    pub fn transition_to(&mut self, to: Status) -> Result<(), InvalidTransition> {
        if self.status.can_transition_to(to) {
            self.status = to;
            Ok(())
        } else {
            Err(InvalidTransition {
                from: self.status,
                to,
            })
        }
    }

    /// Records a use now.
    pub fn touch(&mut self) {
        self.touch_at(Utc::now());
    }

    /// Records a use at `now`.
    pub fn touch_at(&mut self, now: DateTime<Utc>) {
        self.last_used = now;
    }

    /// Whether the environment has sat idle for its whole inactivity timeout
    /// at `now`. A zero timeout never expires; a clock before `last_used`
    /// counts as no idle time.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        if self.inactivity_timeout.is_zero() {
            return false;
        }
        match (now - self.last_used).to_std() {
            Ok(idle) => idle >= self.inactivity_timeout,
            Err(_) => false, // now is before last_used
        }
    }

    /// Whether the status is [`Status::Running`].
    pub fn is_running(&self) -> bool {
        self.status == Status::Running
    }

    /// Checks what a store requires before it keeps this value: today, a
    /// valid [`id`](Self::id).
    pub fn validate(&self) -> Result<(), InvalidId> {
        validate_id(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    /// The full 5 × 5 table: exactly five pairs are allowed.
    #[rstest::rstest]
    fn every_transition_pair(
        #[values(
            Status::Creating,
            Status::Running,
            Status::Destroying,
            Status::Destroyed,
            Status::Error
        )]
        from: Status,
        #[values(
            Status::Creating,
            Status::Running,
            Status::Destroying,
            Status::Destroyed,
            Status::Error
        )]
        to: Status,
    ) {
        use Status::*;
        let allowed = [
            (Creating, Running),
            (Creating, Error),
            (Running, Destroying),
            (Running, Error),
            (Destroying, Destroyed),
        ];
        let mut env = Environment::new_at("e", "n", Runtime::Shell, at(0));
        env.status = from;
        let result = env.transition_to(to);
        if allowed.contains(&(from, to)) {
            assert_eq!(result, Ok(()), "{from} -> {to}");
            assert_eq!(env.status(), to);
        } else {
            assert_eq!(
                result,
                Err(InvalidTransition { from, to }),
                "{from} -> {to}"
            );
            assert_eq!(env.status(), from, "a refused transition changes nothing");
        }
    }

    #[test]
    fn new_starts_creating_with_equal_timestamps() {
        let env = Environment::new("e", "n", Runtime::Node);
        assert_eq!(env.status(), Status::Creating);
        assert_eq!(env.created_at, env.last_used);
        assert!(!env.is_running());
    }

    #[test]
    fn expiry() {
        let mut env = Environment::new_at("e", "n", Runtime::Python, at(1_000));
        assert!(!env.is_expired(at(1_000_000)), "zero timeout never expires");
        env.inactivity_timeout = Duration::from_secs(60);
        assert!(!env.is_expired(at(1_059)));
        assert!(env.is_expired(at(1_060)));
        assert!(
            !env.is_expired(at(10)),
            "a clock before last_used is not idle time"
        );
        env.touch_at(at(1_050));
        assert!(!env.is_expired(at(1_060)));
        assert!(env.is_expired(at(1_050) + TimeDelta::seconds(61)));
    }
}
