// SPDX-License-Identifier: GPL-2.0

//! Two files in one process: the second attaches the first as a peer and
//! WRITEs into the first's registration by its remote key. Memory peers
//! may write is a mapping of the crate's own, registered by range.

use std::io::{Error, Result};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use memreg::{Access, AnonMap, Device, Request};

fn run() -> Result<()> {
    let owner = Device::open()?;
    let writer = Device::open()?;
    // Not a Vec: a borrowed buffer may not be registered for peers to write.
    let target = AnonMap::new(4096)?;
    let mut msg = b"written by a peer".to_vec();
    let len = msg.len() as u64;
    {
        let access = Access::LOCAL | Access::REMOTE_WRITE;
        let t = owner.register_range(target.addr(), target.len(), access)?;
        let peer = writer.attach_peer(owner.as_fd())?;
        let m = writer.register(&mut msg, Access::LOCAL)?;
        let q = writer.create_queue(4, 4, None)?;
        let write = Request::write(peer, t.rkey(), 64, m.lkey(), 0, len);
        // SAFETY: the WRITE writes only `target`'s registered bytes, which
        // no reference borrows until its completion is reaped below (or,
        // on an early return, until `target` is unmapped, which ends the
        // registration first).
        unsafe { q.submit(&write) }?;
        let c = q
            .wait_completion(Some(Duration::from_secs(5)))?
            .ok_or_else(|| Error::other("no completion"))?;
        c.result()?;
    }
    if &target[64..64 + len as usize] != b"written by a peer" {
        return Err(Error::other("the target does not hold the bytes"));
    }
    println!("peer_write: ok ({len} bytes by remote key)");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_write: {e}");
            ExitCode::FAILURE
        }
    }
}
