// SPDX-License-Identifier: GPL-2.0

//! A pool of two classes: one buffer taken, written as a slice, read back
//! through its key, and given back.

use std::io::{Error, Result};
use std::process::ExitCode;
use std::time::Duration;

use memreg::{Access, Device, PoolClass};

fn run() -> Result<()> {
    let dev = Device::open()?;
    let classes = [
        // 1024 buffers of 256 bytes (chunks of 256), 256 mapped at first.
        PoolClass::new(256, 1024, 32, 256),
        // 64 buffers of 4 KiB (chunks of 16).
        PoolClass::new(4096, 64, 4, 16),
    ];
    let pool = dev.create_pool(&classes, Access::LOCAL, 5000, 100)?;
    // The first buffers are mapped by the pool's work: wait for them.
    let mut buf = pool.alloc(1000, Duration::from_secs(2))?;
    buf[..6].copy_from_slice(b"hello\0");
    let mut back = [0u8; 6];
    dev.copy_from_key(buf.key(), buf.offset(), &mut back)?;
    if &back != b"hello\0" {
        return Err(Error::other("COPY read back other bytes"));
    }
    println!(
        "pool: ok (class {}, {} bytes at {:#x})",
        buf.class(),
        buf.size(),
        buf.addr()
    );
    buf.free()?;
    let stats = pool.stats()?;
    if stats.iter().any(|s| s.allocated != 0) {
        return Err(Error::other("a buffer is still allocated"));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool: {e}");
            ExitCode::FAILURE
        }
    }
}
