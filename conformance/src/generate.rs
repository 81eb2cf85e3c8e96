// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Proptest strategies and fixed edge cases for environments and ids.

use std::time::Duration;

use proptest::prelude::*;
use waggle_store::chrono::{DateTime, Utc};
use waggle_store::domain::MAX_ID_BYTES;
use waggle_store::{Capabilities, Environment, Runtime, Status};

/// Any instant RFC 3339 can write (years 0001 to 9999), to the nanosecond.
pub fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800_i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
}

/// Any valid id: printable, no whitespace, 1 to 128 bytes, sometimes unicode,
/// and one time in four exactly 128 bytes.
pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z0-9-]{1,24}".boxed(),
        1 => "[\\PC&&\\S]{1,32}"
            .prop_filter("fits in 128 bytes", |s| s.len() <= MAX_ID_BYTES)
            .boxed(),
        1 => longest_id().boxed(),
    ]
}

/// A valid id of exactly [`MAX_ID_BYTES`] bytes: characters of every width
/// up to the limit, then ASCII to fill it.
pub fn longest_id() -> impl Strategy<Value = String> {
    "[\\PC&&\\S]{1,64}".prop_map(|s| {
        let mut id = String::with_capacity(MAX_ID_BYTES);
        for c in s.chars() {
            if id.len() + c.len_utf8() > MAX_ID_BYTES {
                break;
            }
            id.push(c);
        }
        while id.len() < MAX_ID_BYTES {
            id.push('~');
        }
        id
    })
}

/// The lifecycle paths that reach each status from `creating`.
pub fn status_path() -> impl Strategy<Value = Vec<Status>> {
    prop::sample::select(vec![
        vec![],
        vec![Status::Running],
        vec![Status::Error],
        vec![Status::Running, Status::Error],
        vec![Status::Running, Status::Destroying],
        vec![Status::Running, Status::Destroying, Status::Destroyed],
    ])
}

/// Capabilities: empty, full, or anything between.
pub fn capabilities() -> impl Strategy<Value = Capabilities> {
    (
        proptest::option::of(instant()),
        any::<String>(),
        proptest::array::uniform4(proptest::option::of(any::<String>())),
        proptest::array::uniform7(any::<bool>()),
    )
        .prop_map(|(detected_at, path, cmds, f)| {
            let [python_cmd, pip_cmd, node_cmd, npm_cmd] = cmds;
            Capabilities {
                detected_at,
                path,
                python_cmd,
                pip_cmd,
                node_cmd,
                npm_cmd,
                has_venv: f[0],
                has_apk: f[1],
                has_apt_get: f[2],
                has_dnf: f[3],
                has_yum: f[4],
                has_zypper: f[5],
                is_root: f[6],
            }
        })
}

/// An environment with the given id and every other field arbitrary.
pub fn environment_with_id(id: String) -> impl Strategy<Value = Environment> {
    (
        any::<String>(),
        prop::sample::select(Runtime::ALL.to_vec()),
        status_path(),
        any::<u16>(),
        instant(),
        instant(),
        (any::<u64>(), 0u32..1_000_000_000),
        capabilities(),
        any::<bool>(),
    )
        .prop_map(
            move |(name, runtime, path, port, created, used, timeout, caps, detected)| {
                let mut env = Environment::new_at(id.clone(), name, runtime, created);
                for status in path {
                    // Every step of a `status_path` is allowed.
                    let _ = env.transition_to(status);
                }
                env.ssh_port = port;
                env.last_used = used;
                env.inactivity_timeout = Duration::new(timeout.0, timeout.1);
                env.capabilities = caps;
                env.capabilities_detected = detected;
                env
            },
        )
}

/// Any valid environment.
pub fn environment() -> impl Strategy<Value = Environment> {
    id().prop_flat_map(environment_with_id)
}

/// Hand-picked values at the edges of every field, each with a case name.
pub fn edge_cases() -> Vec<(&'static str, Environment)> {
    let t = |s: i64, n: u32| DateTime::from_timestamp(s, n).unwrap_or_default();
    let base = || Environment::new_at("edge", "edge", Runtime::Python, t(1_790_000_000, 0));
    let mut cases = Vec::new();
    let mut e = base();
    e.created_at = t(1_790_000_000, 1);
    e.last_used = t(1_790_000_001, 999_999_999);
    cases.push(("nanoseconds", e));
    let mut e = base();
    e.ssh_port = 0;
    cases.push(("port 0", e));
    let mut e = base();
    e.ssh_port = u16::MAX;
    cases.push(("port 65535", e));
    let mut e = base();
    e.name = "环境 🐝 \"quoted\" \\ \u{0} \u{7f}".into();
    cases.push(("unicode and escapes in name", e));
    let mut e = base();
    e.name = "x".repeat(1 << 20);
    cases.push(("1 MiB name", e));
    let mut e = base();
    e.name = String::new();
    cases.push(("empty name", e));
    cases.push(("empty capabilities", base()));
    let mut e = base();
    e.capabilities = Capabilities {
        detected_at: Some(t(1_790_000_002, 5)),
        path: "/usr/local/bin:/usr/bin:/bin".into(),
        python_cmd: Some("python3".into()),
        pip_cmd: Some("pip3".into()),
        node_cmd: Some("node".into()),
        npm_cmd: Some("npm".into()),
        has_venv: true,
        has_apk: true,
        has_apt_get: true,
        has_dnf: true,
        has_yum: true,
        has_zypper: true,
        is_root: true,
    };
    e.capabilities_detected = true;
    cases.push(("full capabilities", e));
    let mut e = base();
    e.inactivity_timeout = Duration::new(u64::MAX, 999_999_999);
    cases.push(("largest timeout", e));
    let mut e = base();
    e.inactivity_timeout = Duration::from_nanos(1);
    cases.push(("1 ns timeout", e));
    let mut e = base();
    e.created_at = t(-62_135_596_800, 0);
    e.last_used = t(253_402_300_799, 999_999_999);
    cases.push(("years 1 and 9999", e));
    let mut e = base();
    e.id = "x".repeat(MAX_ID_BYTES);
    cases.push(("128-byte id", e));
    let mut e = base();
    e.id = "ünïcödé/ключ:🐝".into();
    cases.push(("unicode id", e));
    for status in [Status::Running, Status::Error] {
        let mut e = base();
        let _ = e.transition_to(status);
        cases.push((
            if status == Status::Running {
                "running"
            } else {
                "error"
            },
            e,
        ));
    }
    let mut e = base();
    for s in [Status::Running, Status::Destroying, Status::Destroyed] {
        let _ = e.transition_to(s);
    }
    cases.push(("destroyed", e));
    cases
}

/// Ids every store must accept and keep byte for byte, each with a case
/// name: every boundary of the rules, and characters stores like to
/// mangle (path separators, quotes, escapes, Unicode punctuation, marks).
pub fn valid_ids() -> Vec<(&'static str, String)> {
    let fill = |unit: &str, tail: &str| {
        let mut id = unit.repeat((MAX_ID_BYTES - tail.len()) / unit.len());
        id.push_str(tail);
        id
    };
    vec![
        ("1 byte", "a".into()),
        ("1 byte of punctuation", "-".into()),
        ("one 4-byte character", "🐝".into()),
        ("128 bytes of ASCII", fill("x", "")),
        ("128 bytes of 2-byte UTF-8", fill("é", "")),
        ("128 bytes of 3-byte UTF-8, then ASCII", fill("€", "zz")),
        ("128 bytes of 4-byte UTF-8", fill("🐝", "")),
        ("127 bytes of ASCII", "x".repeat(MAX_ID_BYTES - 1)),
        (
            "every ASCII punctuation mark",
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".into(),
        ),
        ("a path", "../etc/passwd".into()),
        ("backslashes", "C:\\Users\\env".into()),
        ("percent-encoding", "a%2Fb%00".into()),
        ("SQL quoting", "x';DROP-TABLE--".into()),
        ("JSON escapes", "\\u0000\\n\"".into()),
        ("Unicode punctuation of each class", "‿—⁅⁆‘’¡«»".into()),
        ("combining mark", "e\u{301}".into()),
        ("zero-width joiner", "👩\u{200d}💻".into()),
        ("right-to-left", "שלום".into()),
        ("looks like a number", "0001".into()),
        ("dot", ".".into()),
    ]
}

/// Ids no store accepts, each with a case name.
pub fn invalid_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("129 bytes", "x".repeat(MAX_ID_BYTES + 1)),
        ("129 bytes of unicode", "é".repeat(64) + "x"),
        ("129 bytes of 4-byte UTF-8 and ASCII", "🐝".repeat(32) + "x"),
        ("space", "a b".into()),
        ("leading space", " a".into()),
        ("tab", "a\tb".into()),
        ("newline", "a\n".into()),
        ("NUL", "a\0b".into()),
        ("DEL", "a\u{7f}".into()),
        ("no-break space", "a\u{a0}b".into()),
        ("next line", "a\u{85}".into()),
    ]
}
