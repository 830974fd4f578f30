// SPDX-License-Identifier: GPL-2.0

//! The data path: queues of submission and completion rings shared with user
//! space, the master ring, the context's worker that executes requests, the
//! shadow translation cache it resolves keys through, and the operations a
//! request may ask for.
//!
//! - [`queue`]: one queue's mappings, the posting protocol's kernel side and
//!   the receive side of a connection;
//! - [`worker`]: the worker's runs, batching and polling;
//! - [`transfer`]: moving bytes between registrations, shared with the COPY
//!   ioctl;
//! - [`ops`]: one file per opcode, in a table indexed by opcode.

pub(crate) mod ops;
pub(crate) mod queue;
pub(crate) mod transfer;
pub(crate) mod worker;
