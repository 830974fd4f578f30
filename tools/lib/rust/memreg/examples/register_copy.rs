// SPDX-License-Identifier: GPL-2.0

//! Registers a buffer, copies into it through the kernel with
//! `MEMREG_IOC_COPY`, and checks the bytes.

use std::process::ExitCode;

use memreg::{Access, Device};

fn run() -> std::io::Result<()> {
    let dev = Device::open()?;
    let mut buf = vec![0u8; 8192];
    let msg = b"copied by the kernel through its translation entries";
    {
        let reg = dev.register(&mut buf, Access::LOCAL)?;
        reg.copy_to(4000, msg)?;
        let mut back = vec![0u8; msg.len()];
        reg.copy_from(4000, &mut back)?;
        if back != msg {
            return Err(std::io::Error::other("COPY read back other bytes"));
        }
    }
    if &buf[4000..4000 + msg.len()] != msg {
        return Err(std::io::Error::other("the buffer does not hold the bytes"));
    }
    println!("register_copy: ok ({} bytes at offset 4000)", msg.len());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("register_copy: {e}");
            ExitCode::FAILURE
        }
    }
}
