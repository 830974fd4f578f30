// SPDX-License-Identifier: GPL-2.0

//! Times `iterations` rounds of one NOP posted and its completion reaped by
//! busy-polling (no sleeping, no poll(2)) on a queue of 64 entries, after
//! 1000 rounds of warm-up; prints `ns_per_op <float>`.

use std::io::{Error, Result};
use std::process::ExitCode;
use std::time::Instant;

use memreg::{Device, Queue, Request};

const WARMUP: u64 = 1000;

fn round(q: &Queue<'_>, i: u64) -> Result<()> {
    // SAFETY: a NOP names no memory.
    unsafe { q.submit(&Request::nop().user_data(i)) }?;
    loop {
        if let Some(c) = q.peek_completion() {
            if c.user_data != i || c.status != 0 {
                return Err(Error::other(format!("unexpected completion {c:?}")));
            }
            return Ok(());
        }
        std::hint::spin_loop();
    }
}

fn run() -> Result<()> {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::other("usage: ring_nop_bench <iterations>"))?;
    let dev = Device::open()?;
    let q = dev.create_queue(64, 64, None)?;
    for i in 0..WARMUP {
        round(&q, i)?;
    }
    let start = Instant::now();
    for i in 0..iterations {
        round(&q, WARMUP + i)?;
    }
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("ns_per_op {ns:.1}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_nop_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
