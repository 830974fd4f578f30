// SPDX-License-Identifier: GPL-2.0

//! Registers two buffers, copies between them through a queue's rings, then
//! unmaps one and watches its registration end through its state word and
//! the event ring. This is the program of README.md.

use std::io::{Error, Result};
use std::process::ExitCode;
use std::time::Duration;

use memreg::{Access, AnonMap, Device, EventKind, Request};

fn run() -> Result<()> {
    let dev = Device::open()?;
    dev.map_state_words(512)?; // before registering: a state word each
    let mut events = dev.setup_events(64, None)?;

    let mut src = b"through the ring".to_vec();
    let src_reg = dev.register(&mut src, Access::LOCAL)?;
    let dst = AnonMap::new(4096)?; // memory we will unmap
    let dst_reg = dev.register_range(dst.addr(), dst.len(), Access::LOCAL)?;

    let queue = dev.create_queue(64, 64, None)?;
    let len = src_reg.len();
    // Offsets count from each registration's region_addr.
    let (dst_off, src_off) = (dst_reg.buffer_offset(), src_reg.buffer_offset());
    let copy = Request::copy(dst_reg.lkey(), dst_off, src_reg.lkey(), src_off, len);
    // SAFETY: the COPY writes only `dst`'s registered bytes, and no
    // reference borrows `dst` until its completion is reaped below. Should
    // this return early instead, dropping `dst` unmaps it, which ends the
    // registration before the memory can be reused.
    unsafe { queue.submit(&copy.user_data(1)) }?;
    let done = queue
        .wait_completion(Some(Duration::from_secs(5)))?
        .ok_or_else(|| Error::other("no completion"))?;
    done.result()?;
    if dst[..len as usize] != b"through the ring"[..] {
        return Err(Error::other("COPY moved other bytes"));
    }

    drop(dst); // munmap: the registration ends before this returns
    if dst_reg.is_valid()? {
        return Err(Error::other("still valid after munmap"));
    }
    let ended = events
        .events()
        .any(|e| e.key == dst_reg.lkey() && e.kind == EventKind::Ended);
    if !ended {
        return Err(Error::other("no ENDED event"));
    }
    println!("ring_copy: ok ({len} bytes copied, ENDED seen after munmap)");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_copy: {e}");
            ExitCode::FAILURE
        }
    }
}
