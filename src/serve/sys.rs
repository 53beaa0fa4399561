//! Linux system calls that std does not wrap: batched UDP I/O over `sendmmsg`/`recvmmsg`
//! with kernel receive timestamps (`SO_TIMESTAMPNS`) for the load generator (one system
//! call moves up to [`BATCH`] datagrams, so the generator costs a fraction of the gateway it
//! measures and its latency figures start and stop at the kernel), and real-time scheduling
//! for the media threads.
//!
//! Owns: the only `unsafe` in the crate: the `libc` calls and the message headers they
//! read and write, all preallocated once and pointing into buffers this module owns.
//! Must never: hand out a pointer that outlives its buffer, or read past the length the
//! kernel reported; IPv4 only (loopback load), anything else is refused with an error.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram moved.
const SLOT: usize = 2048;
/// Room for one `SCM_TIMESTAMPNS` control message.
const CMSG_ROOM: usize = 64;

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn v4(a: SocketAddr) -> io::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "batched UDP is IPv4 only",
        )),
    }
}

fn setsockopt_int(sock: &UdpSocket, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: the option value is a live i32 of the size passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&v as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask for a receive buffer of `bytes`, beyond `net.core.rmem_max` when running as root.
pub fn set_receive_buffer(sock: &UdpSocket, bytes: i32) -> io::Result<()> {
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
        .or_else(|_| setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes))
}

/// Ask for a send buffer of `bytes`, beyond `net.core.wmem_max` when running as root.
pub fn set_send_buffer(sock: &UdpSocket, bytes: i32) -> io::Result<()> {
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes)
        .or_else(|_| setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes))
}

/// `CLOCK_REALTIME` in nanoseconds: the clock `SO_TIMESTAMPNS` stamps received datagrams
/// with, so send and receive instants compare directly.
pub fn realtime_ns() -> u64 {
    // SAFETY: clock_gettime writes one timespec into the live local.
    let mut ts: libc::timespec = unsafe { zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Run the calling thread under `SCHED_FIFO` at `priority` (1 to 99), so media is never
/// queued behind ordinary work on a busy machine. Needs root or `CAP_SYS_NICE`.
pub fn set_realtime_priority(priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; the parameter is a live local.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A batch's worth of empty I/O vectors and message headers, filled in per call (they hold
/// pointers into buffers, so they live on the caller's stack for one system call only).
fn empty_headers() -> ([libc::iovec; BATCH], [libc::mmsghdr; BATCH]) {
    let iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
    let msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    (iov, msgs)
}

/// Up to [`BATCH`] datagrams, each to its own address, sent with one `sendmmsg`.
pub struct BatchSender {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    lens: [usize; BATCH],
    to: [libc::sockaddr_in; BATCH],
    n: usize,
}

impl Default for BatchSender {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchSender {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0; SLOT]; BATCH]),
            lens: [0; BATCH],
            to: [sockaddr_in(SocketAddrV4::new(0.into(), 0)); BATCH],
            n: 0,
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Nothing queued?
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Is the batch full (flush before the next push)?
    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// Queue a datagram written by `write` (which returns its length) for `to`. Fails when
    /// the batch is full, the address is not IPv4 or `write` reports more than a slot.
    pub fn push(
        &mut self,
        to: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> io::Result<()> {
        if self.is_full() {
            return Err(io::Error::other("batch full"));
        }
        let to = v4(to)?;
        let len = write(&mut self.bufs[self.n][..])
            .filter(|&l| l <= SLOT)
            .ok_or_else(|| io::Error::other("datagram does not fit"))?;
        self.lens[self.n] = len;
        self.to[self.n] = sockaddr_in(to);
        self.n += 1;
        Ok(())
    }

    /// Send every queued datagram on `sock` (blocking until the kernel took them all);
    /// returns how many were sent and empties the batch either way.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let n = self.n;
        self.n = 0;
        let (mut iov, mut msgs) = empty_headers();
        for i in 0..n {
            iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = self.lens[i];
            msgs[i].msg_hdr.msg_name = (&mut self.to[i] as *mut libc::sockaddr_in).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] point at iovecs, buffers and addresses owned by self and
            // by this frame, all alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // ECONNREFUSED from an earlier ICMP error belongs to no datagram of this
                // batch: skip the one at the head and go on.
                if done + 1 >= n {
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
                done += 1;
                continue;
            }
            done += r as usize;
        }
        Ok(done)
    }
}

/// One received datagram of a [`BatchReceiver`].
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Bytes.
    pub len: usize,
    /// Source address.
    pub from: SocketAddrV4,
    /// Kernel receive time, `CLOCK_REALTIME` ns (0 when the kernel gave none).
    pub at_ns: u64,
}

/// Up to [`BATCH`] datagrams received with one `recvmmsg`, each with its kernel receive
/// timestamp.
pub struct BatchReceiver {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    names: [libc::sockaddr_in; BATCH],
    cmsgs: Box<[[u64; CMSG_ROOM / 8]; BATCH]>,
    got: [Received; BATCH],
    n: usize,
}

impl BatchReceiver {
    /// A receiver for `sock`: turns on `SO_TIMESTAMPNS` and sets a receive timeout of
    /// `poll` so [`recv`](Self::recv) returns regularly even when nothing arrives.
    pub fn new(sock: &UdpSocket, poll: Duration) -> io::Result<Self> {
        setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        sock.set_read_timeout(Some(poll))?;
        Ok(Self {
            bufs: Box::new([[0; SLOT]; BATCH]),
            names: [sockaddr_in(SocketAddrV4::new(0.into(), 0)); BATCH],
            cmsgs: Box::new([[0; CMSG_ROOM / 8]; BATCH]),
            got: [Received {
                len: 0,
                from: SocketAddrV4::new(0.into(), 0),
                at_ns: 0,
            }; BATCH],
            n: 0,
        })
    }

    /// Take the datagrams that are queued, up to [`BATCH`]; with `wait`, first wait for at
    /// least one (up to the poll timeout). Returns how many (0 when none came).
    pub fn recv(&mut self, sock: &UdpSocket, wait: bool) -> io::Result<usize> {
        let (mut iov, mut msgs) = empty_headers();
        for i in 0..BATCH {
            iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = SLOT;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG_ROOM as _;
        }
        // SAFETY: every header points at buffers owned by self or this frame, sized as
        // declared, alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                if wait {
                    libc::MSG_WAITFORONE
                } else {
                    libc::MSG_DONTWAIT
                },
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        self.n = r as usize;
        for (i, m) in msgs[..self.n].iter().enumerate() {
            let h = &m.msg_hdr;
            let name = &self.names[i];
            let mut at_ns = 0;
            // SAFETY: the CMSG_* walk stays within msg_controllen, which the kernel set to
            // what it wrote into our buffer.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET
                        && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                    {
                        let ts: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        at_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            self.got[i] = Received {
                len: (m.msg_len as usize).min(SLOT),
                from: SocketAddrV4::new(
                    u32::from_be(name.sin_addr.s_addr).into(),
                    u16::from_be(name.sin_port),
                ),
                at_ns,
            };
        }
        Ok(self.n)
    }

    /// Datagram `i` of the last [`recv`](Self::recv) and its bytes.
    pub fn get(&self, i: usize) -> Option<(Received, &[u8])> {
        (i < self.n).then(|| (self.got[i], &self.bufs[i][..self.got[i].len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_sources_and_kernel_times() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut b = BatchSender::new();
        let t0 = realtime_ns();
        for k in 0..10u8 {
            b.push(to, |buf| {
                buf[..3].copy_from_slice(&[k, k, k]);
                Some(3)
            })
            .unwrap();
        }
        assert_eq!(b.flush(&tx).unwrap(), 10);
        let mut r = BatchReceiver::new(&rx, Duration::from_millis(200)).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 10 {
            let n = r.recv(&rx, true).unwrap();
            assert!(n > 0, "timed out after {} datagrams", seen.len());
            for i in 0..n {
                let (m, bytes) = r.get(i).unwrap();
                assert_eq!(SocketAddr::V4(m.from), tx.local_addr().unwrap());
                assert!(
                    m.at_ns >= t0 && m.at_ns < t0 + 1_000_000_000,
                    "{m:?} vs {t0}"
                );
                seen.push(bytes.to_vec());
            }
        }
        let want: Vec<Vec<u8>> = (0..10u8).map(|k| vec![k, k, k]).collect();
        assert_eq!(seen, want);
        assert!(r.get(seen.len()).is_none());
    }

    #[test]
    fn ipv6_and_oversized_datagrams_are_refused_not_sent() {
        let mut b = BatchSender::new();
        assert!(b.push("[::1]:9".parse().unwrap(), |_| Some(1)).is_err());
        assert!(b
            .push("127.0.0.1:9".parse().unwrap(), |_| Some(SLOT + 1))
            .is_err());
        assert!(b.is_empty());
    }
}
