// SPDX-License-Identifier: GPL-2.0

//! The error of a memreg operation.
//!
//! An operation fails with one [`MemregError`]. Through an ioctl it reaches
//! user space as an errno; through the request rings it becomes the status of
//! a completion, the same number negated, so a program reads one vocabulary
//! of failures whichever way it asked. The errors each operation
//! returns are listed in `Documentation/userspace-api/memreg/errors.rst`.

use kernel::{alloc::AllocError, prelude::*};

/// The error of a memreg operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemregError(Error);

impl MemregError {
    /// The completion status a request on a ring reports: the negative
    /// errno.
    pub(crate) fn status(self) -> i32 {
        self.0.to_errno()
    }
}

impl From<Error> for MemregError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<AllocError> for MemregError {
    fn from(_: AllocError) -> Self {
        Self(ENOMEM)
    }
}

impl From<MemregError> for Error {
    fn from(e: MemregError) -> Self {
        e.0
    }
}

/// The result of a memreg operation.
pub(crate) type OpResult<T = ()> = core::result::Result<T, MemregError>;

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_error)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_an_errno_and_a_status() {
        let e = MemregError::from(ENOENT);
        assert_eq!(Error::from(e), ENOENT);
        assert_eq!(e.status(), -2);
        assert_eq!(MemregError::from(AllocError).status(), ENOMEM.to_errno());
    }
}
