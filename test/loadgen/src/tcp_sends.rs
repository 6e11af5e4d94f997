//! TCP sends (`--tcp-sends N`): one loopback TCP connection (TCP_NODELAY), N
//! send() calls of 16 bytes from one thread while another reads and discards.
//! In mode tracepoint portwatch's UDP programs sit on the send syscalls' own
//! tracepoints, which fire for every socket's sends: this is what they cost a
//! program that never touches UDP. Prints one JSON object: sends, seconds, rate,
//! user_seconds and system_seconds (of the sending thread), pid.
use std::{
    io::Read,
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result};

use crate::{pin, timer::Timer};

pub fn tcp_sends(n: u64, cpu: Option<usize>) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("a listener")?;
    let at = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        while c.read(&mut buf)? > 0 {}
        Ok(())
    });
    let stream = TcpStream::connect(at).context("connecting")?;
    stream.set_nodelay(true)?;
    pin(cpu);
    let data = [0u8; 16];
    let timer = Timer::start();
    for _ in 0..n {
        // send(2) itself: the syscall whose tracepoints are measured.
        // SAFETY: a live descriptor and a buffer of the length given.
        let sent = unsafe {
            nix::libc::send(
                stream.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                nix::libc::MSG_NOSIGNAL,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("send");
        }
    }
    let out = timer.stop("sends", n);
    drop(stream);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?
        .context("the reader")?;
    println!("{out}");
    Ok(())
}
