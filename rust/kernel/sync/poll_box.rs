// SPDX-License-Identifier: GPL-2.0

//! [`PollCondVarBox`] for kernels that lack it (7.2): a [`PollCondVar`] in an
//! allocation of its own. Unlike the later kernels' type, dropping it waits
//! for an RCU grace period (as dropping a [`PollCondVar`] does).
#![cfg(CONFIG_MEMREG_COMPAT_7_2)]

use crate::{
    prelude::*,
    str::CStr,
    sync::{poll::PollCondVar, LockClassKey},
};
use core::ops::Deref;

/// A [`PollCondVar`] in its own allocation.
pub struct PollCondVarBox {
    inner: Pin<KBox<PollCondVar>>,
}

impl PollCondVarBox {
    /// Creates a condition variable with `name` and lock class `key`.
    pub fn new(name: &'static CStr, key: Pin<&'static LockClassKey>) -> Result<Self> {
        Ok(Self {
            inner: KBox::pin_init(PollCondVar::new(name, key), GFP_KERNEL)?,
        })
    }
}

impl Deref for PollCondVarBox {
    type Target = PollCondVar;

    fn deref(&self) -> &PollCondVar {
        &self.inner
    }
}
