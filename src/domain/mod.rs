// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The domain: what an environment is and the rules it follows. Pure data
//! and logic — nothing in here performs I/O or knows how it is stored.

mod environment;
mod id;
mod runtime;
mod status;

pub use environment::{Capabilities, Environment};
pub use id::{InvalidId, MAX_ID_BYTES, validate_id};
pub use runtime::{Runtime, UnknownRuntime};
pub use status::{InvalidTransition, Status, UnknownStatus};
