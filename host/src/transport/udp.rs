//! UDP: one datagram is one message.
//!
//! Several plain threads receive from each listener's socket, so that a
//! burst spreads over every core, and the thread that received a message
//! handles it. They take turns at the socket: the one whose turn it is
//! receives a batch and sorts it (parses each datagram and queues it for
//! its call) before the next may receive. Handling, hooks included, comes
//! after the turn is given up. So messages from one peer are queued in the
//! order the socket delivered them: when each thread received on its own,
//! a callee's back-to-back 180 and 200 could be taken by two threads and
//! the 200 queued first, and a stateless route forwarded them swapped.
//!
//! An idle thread waits for the socket to be readable, not for the turn
//! (on Linux: its own epoll set, `EPOLLEXCLUSIVE`, so that a datagram
//! wakes one waiting thread), and takes the turn only to receive what is
//! there without blocking. A thread that held the turn while it waited in
//! `recvmmsg` would make the next one wait for the turn instead, and every
//! datagram would wake two threads: the receiver, then the one it handed
//! the turn to. A wake-up costs tens of microseconds of CPU on a virtual
//! machine, as much as a message's parse and validation. For the same
//! reason a thread woken while another holds the turn looks at the socket
//! again rather than wait for the turn ([`LOOK_AGAIN`]): most often the
//! holder's batch took the datagram that woke it, and it goes back to
//! sleep; waiting for the turn cost it a sleep and a wake-up more.
//!
//! A thread that slept waiting takes one datagram; one that found the
//! socket readable without sleeping takes a batch (`recvmmsg`, up to 8).
//! Clients send in bursts (SIPp at 1000 calls/s: nearly a third of the
//! datagrams came in full batches of 8), and a batch taken by a thread
//! just woken made its last datagram wait for the other seven's handling
//! while the other thread, woken for one of them, found the socket empty
//! and slept again. Taken one at a time, a burst's datagrams go to every
//! thread its arrival woke. A thread back from handling that finds
//! datagrams still queued is behind the load: there a batch saves a
//! system call per datagram, which the highest rates need.
//!
//! Its thread handles such a batch shard by shard, and the other thread
//! may have nothing to do meanwhile: no datagram comes to wake it, those
//! that came are in the batch. So a thread with nothing to receive, before
//! it sleeps, takes over what a batch left for later
//! ([`Datagrams::help`]): the shards its thread has not come to yet. At
//! 1000 calls/s, an INVITE waited 67 µs at the median between its parse
//! and its handling (issue #15), most of it for the INVITEs before it in
//! its burst.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, TryLockError};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use super::{Datagrams, Inbound, Transport};

/// Largest datagram we accept; SIP over UDP stays far below this.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked of the kernel: bursts of retransmissions must not
/// be dropped before we read them.
const RECV_BUFFER: usize = 4 << 20;

/// A blocking socket: on Linux receivers wait for it in epoll and take what
/// it holds without blocking (`MSG_DONTWAIT`), elsewhere they block in
/// `recv_from`; a send waits only while the kernel's send buffer is full,
/// which a datagram socket drains at once.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // An IPv6 listener serves IPv6 only; IPv4 has listeners of its own.
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A socket's turn to receive: whoever holds it is the one thread
/// receiving from the socket, into the socket's buffers.
pub(super) struct Turn(Mutex<Batch>);

impl Turn {
    pub(super) fn new() -> Turn {
        Turn(Mutex::new(Batch::new()))
    }
}

/// Receives datagrams for ever on the calling thread: waits until the
/// socket is `readable`, sorts what it holds with `datagrams` while holding
/// the socket's `turn`, then handles them.
pub(super) fn receive<D: Datagrams>(
    socket: Arc<UdpSocket>,
    readable: Readable,
    turn: Arc<Turn>,
    listener: usize,
    datagrams: &D,
) {
    // Messages are made and dropped here by the thousand a second.
    crate::allocator::cache_this_thread();
    let mut sorted = Vec::with_capacity(BATCH);
    // A full batch says more is queued: receive again before waiting.
    let mut more = false;
    // Times in a row this thread found the turn taken after a wake-up.
    let mut taken = 0;
    // Whether this thread slept waiting for the socket since it last took
    // the turn.
    let mut slept = false;
    loop {
        if !more && !readable.ready() {
            // Before sleeping: what another thread's batch left for later
            // (then the socket again, which may have filled meanwhile).
            if datagrams.help() {
                continue;
            }
            readable.sleep();
            slept = true;
        }
        {
            // A thread that panicked while sorting left only buffers behind.
            let mut batch = match turn.0.try_lock() {
                Ok(batch) => batch,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) if !more && taken < LOOK_AGAIN => {
                    // Another thread is receiving: what woke this one may
                    // be in its batch already. Waiting for the socket again
                    // sleeps if so, and returns at once while a datagram
                    // is still queued, until the turn is free; waiting for
                    // the turn would cost a sleep and a wake-up more.
                    taken += 1;
                    continue;
                }
                Err(TryLockError::WouldBlock) => turn.0.lock().unwrap_or_else(|e| e.into_inner()),
            };
            taken = 0;
            // One datagram after a sleep, a batch behind the load (see the
            // module's documentation).
            let limit = if slept { 1 } else { BATCH };
            slept = false;
            let received = match batch.receive(&socket, limit) {
                Ok(received) => received,
                Err(err) => {
                    more = false;
                    // Another thread took what woke this one.
                    if err.kind() != std::io::ErrorKind::WouldBlock {
                        // ICMP errors from earlier sends surface here on
                        // some systems; they concern one peer, not the socket.
                        tracing::debug!(%err, "udp receive error");
                    }
                    continue;
                }
            };
            more = received.len() == BATCH;
            for (datagram, remote) in received {
                if datagram.iter().all(|b| b.is_ascii_whitespace()) {
                    continue; // keepalive (CRLF) or empty datagram
                }
                // Each datagram is copied out at its own size. (Splitting
                // datagrams off a shared BytesMut made every message keep a
                // 64 KiB allocation alive for as long as its transaction.)
                let inbound = Inbound {
                    data: Bytes::copy_from_slice(datagram),
                    transport: Transport::Udp,
                    remote,
                    listener,
                };
                if let Some(s) = datagrams.sort(inbound) {
                    sorted.push(s);
                }
            }
        }
        datagrams.handle(&mut sorted);
        sorted.clear();
    }
}

/// One receiving thread's wait for its socket to hold a datagram.
#[cfg(target_os = "linux")]
pub(super) struct Readable(std::os::fd::OwnedFd);

#[cfg(target_os = "linux")]
impl Readable {
    /// An epoll set of its own watching `socket` with `EPOLLEXCLUSIVE`: a
    /// datagram arriving while several threads wait wakes one of them.
    pub(super) fn new(socket: &UdpSocket) -> std::io::Result<Readable> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain system calls; the descriptor is owned from here.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 returned a descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let added = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Readable(epoll))
    }

    /// Whether the socket is readable now.
    fn ready(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `event` is one writable event for the duration of the call.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut event, 1, 0) == 1 }
    }

    /// Blocks until the socket is readable (or may be: the receive that
    /// follows does not block either way).
    fn sleep(&self) {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `event` is one writable event for the duration of the call.
        let got = unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut event, 1, -1) };
        if got < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                // Not seen in practice; back off rather than spin.
                tracing::warn!(%err, "udp: waiting for the socket failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Elsewhere the receive itself blocks, holding the turn.
#[cfg(not(target_os = "linux"))]
pub(super) struct Readable;

#[cfg(not(target_os = "linux"))]
impl Readable {
    pub(super) fn new(_socket: &UdpSocket) -> std::io::Result<Readable> {
        Ok(Readable)
    }

    fn ready(&self) -> bool {
        false
    }

    fn sleep(&self) {}
}

/// How many times in a row a thread woken for a datagram looks at the
/// socket again, rather than wait for the turn, while another thread holds
/// it (about a microsecond each: the holder gives the turn up within a few
/// sorts). Elsewhere than on Linux the holder blocks in its receive: the
/// others wait for the turn at once.
const LOOK_AGAIN: u32 = if cfg!(target_os = "linux") { 8 } else { 0 };

/// Datagrams taken by one system call at most: under load, one
/// `recvmmsg` returns what queued meanwhile, where `recv_from` would need a
/// call (and often a wakeup) each.
const BATCH: usize = 8;

struct Batch {
    buffers: Vec<Vec<u8>>,
    /// The buffer, length and sender of each datagram of the last receive.
    received: Vec<(usize, usize, SocketAddr)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buffers: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Takes what is queued, up to `limit` datagrams (at most a batch),
    /// without waiting: `WouldBlock` when nothing is.
    #[cfg(target_os = "linux")]
    fn receive(
        &mut self,
        socket: &UdpSocket,
        limit: usize,
    ) -> std::io::Result<impl ExactSizeIterator<Item = (&[u8], SocketAddr)>> {
        use socket2::{SockAddr, SockAddrStorage};
        use std::os::fd::AsRawFd;

        let mut names: [SockAddrStorage; BATCH] =
            std::array::from_fn(|_| SockAddrStorage::zeroed());
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.buffers[i].as_mut_ptr().cast(),
            iov_len: self.buffers[i].len(),
        });
        // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((header, name), iovec) in headers.iter_mut().zip(&mut names).zip(&mut iovecs) {
            // SAFETY: SockAddrStorage wraps a sockaddr_storage.
            header.msg_hdr.msg_name = unsafe { name.view_as::<libc::sockaddr_storage>() }
                as *mut libc::sockaddr_storage
                as *mut libc::c_void;
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live name and a live buffer of
        // the length given, for the duration of the call.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                limit.clamp(1, BATCH) as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.received.clear();
        for (i, (header, name)) in headers.iter().zip(names).enumerate().take(got as usize) {
            // SAFETY: the kernel wrote a socket address of this length.
            let from = unsafe { SockAddr::new(name, header.msg_hdr.msg_namelen) };
            if let Some(from) = from.as_socket() {
                self.received.push((i, header.msg_len as usize, from));
            }
        }
        Ok(self.datagrams())
    }

    /// Waits for one datagram.
    #[cfg(not(target_os = "linux"))]
    fn receive(
        &mut self,
        socket: &UdpSocket,
        _limit: usize,
    ) -> std::io::Result<impl ExactSizeIterator<Item = (&[u8], SocketAddr)>> {
        let (len, from) = socket.recv_from(&mut self.buffers[0])?;
        self.received.clear();
        self.received.push((0, len, from));
        Ok(self.datagrams())
    }

    fn datagrams(&self) -> impl ExactSizeIterator<Item = (&[u8], SocketAddr)> {
        self.received.iter().map(|&(i, len, from)| {
            let buffer = &self.buffers[i];
            (&buffer[..len.min(buffer.len())], from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    /// Records the order datagrams are sorted in; handling takes a while,
    /// as a hook would.
    struct Recorder(Mutex<Vec<u32>>);

    impl Datagrams for Recorder {
        type Sorted = ();
        fn sort(&self, inbound: Inbound) -> Option<()> {
            let text = std::str::from_utf8(&inbound.data).expect("utf-8");
            let n = text.parse().expect("a number");
            self.0.lock().expect("lock").push(n);
            Some(())
        }
        fn handle(&self, sorted: &mut Vec<()>) {
            for () in sorted.drain(..) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    #[test]
    fn one_peers_datagrams_are_sorted_in_the_order_they_arrived() {
        let socket = Arc::new(bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind"));
        let addr = socket.local_addr().expect("addr");
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let turn = Arc::new(Turn::new());
        for _ in 0..4 {
            let (socket, turn, recorder) = (socket.clone(), turn.clone(), recorder.clone());
            let readable = Readable::new(&socket).expect("epoll");
            // Left running: the test process ends them.
            std::thread::spawn(move || receive(socket, readable, turn, 0, &*recorder));
        }
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("peer");
        const SENT: u32 = 3000;
        for n in 0..SENT {
            peer.send_to(n.to_string().as_bytes(), addr).expect("send");
            if n % 100 == 99 {
                // Bursts, so that several threads wait at the socket.
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while recorder.0.lock().expect("lock").len() < SENT as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let sorted = recorder.0.lock().expect("lock").clone();
        assert!(
            sorted.len() > SENT as usize / 2,
            "only {} arrived",
            sorted.len()
        );
        let swapped = sorted.windows(2).filter(|w| w[0] > w[1]).count();
        assert_eq!(
            swapped, 0,
            "{swapped} datagrams sorted before one sent earlier"
        );
    }

    /// Handles each datagram by waiting (5 s at most) until two have come
    /// to be handled, and records whether they had: two datagrams handled
    /// side by side both see the other, two handled one after the other
    /// (one thread took both) do not.
    #[cfg(target_os = "linux")]
    #[derive(Default)]
    struct Meeting {
        arrived: Mutex<u32>,
        met: Mutex<Vec<bool>>,
    }

    #[cfg(target_os = "linux")]
    impl Datagrams for Meeting {
        type Sorted = ();
        fn sort(&self, _inbound: Inbound) -> Option<()> {
            Some(())
        }
        fn handle(&self, sorted: &mut Vec<()>) {
            for () in sorted.drain(..) {
                *self.arrived.lock().expect("lock") += 1;
                let deadline = Instant::now() + Duration::from_secs(5);
                while *self.arrived.lock().expect("lock") < 2 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let met = *self.arrived.lock().expect("lock") >= 2;
                self.met.lock().expect("lock").push(met);
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn two_datagrams_arriving_together_at_idle_threads_are_handled_side_by_side() {
        let meeting = Arc::new(Meeting::default());
        // Both threads asleep at the socket before the datagrams come (a
        // thread that finds datagrams queued without sleeping takes a
        // batch, as under load).
        let (addr, turn) = two_asleep("udp-meeting-", meeting.clone());
        // Both queued before either thread receives: the turn is held
        // meanwhile.
        let held = turn.0.lock().expect("turn");
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("peer");
        peer.send_to(b"1", addr).expect("send");
        peer.send_to(b"2", addr).expect("send");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(20);
        while meeting.met.lock().expect("lock").len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let met = meeting.met.lock().expect("lock").clone();
        assert_eq!(
            met,
            [true, true],
            "the second datagram waited for the first one's handling"
        );
    }

    /// A batch's datagrams queued, each "shard" its own: handling one
    /// waits for its gate (the name starting with "0") or, as in
    /// [`Meeting`], for another to be handled at the same time ("1", "2").
    #[cfg(target_os = "linux")]
    #[derive(Default)]
    struct Sharing {
        queued: Mutex<std::collections::VecDeque<String>>,
        sorted: Mutex<u32>,
        open: Mutex<Vec<String>>,
        meeting: Meeting,
    }

    #[cfg(target_os = "linux")]
    impl Sharing {
        fn work(&self, name: String) {
            if name.starts_with('0') {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !self.open.lock().expect("lock").contains(&name) && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            } else {
                self.meeting.handle(&mut vec![()]);
            }
        }
    }

    #[cfg(target_os = "linux")]
    impl Datagrams for Sharing {
        type Sorted = ();
        fn sort(&self, inbound: Inbound) -> Option<()> {
            let name = String::from_utf8_lossy(&inbound.data).into_owned();
            self.queued.lock().expect("lock").push_back(name);
            *self.sorted.lock().expect("lock") += 1;
            Some(())
        }
        fn handle(&self, sorted: &mut Vec<()>) {
            for () in sorted.drain(..) {
                let next = self.queued.lock().expect("lock").pop_front();
                if let Some(name) = next {
                    self.work(name);
                }
            }
        }
        fn help(&self) -> bool {
            let next = self.queued.lock().expect("lock").pop_back();
            next.map(|name| self.work(name)).is_some()
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_batch_taken_while_the_other_thread_worked_is_shared_when_it_is_done() {
        let sharing = Arc::new(Sharing::default());
        let (addr, turn) = two_asleep("udp-sharing-", sharing.clone());
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("peer");
        // Both threads busy: one datagram each (sent while the turn is
        // held, so that neither takes both)...
        let held = turn.0.lock().expect("turn");
        peer.send_to(b"0a", addr).expect("send");
        peer.send_to(b"0b", addr).expect("send");
        drop(held);
        let sorted = |n| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while *sharing.sorted.lock().expect("lock") < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        sorted(2);
        // ...while two more come; the first thread done takes both, as a
        // batch, and handles "1" first, which waits for "2"...
        peer.send_to(b"1", addr).expect("send");
        peer.send_to(b"2", addr).expect("send");
        sharing.open.lock().expect("lock").push("0a".into());
        sorted(4);
        // ...which the other thread, done next, finds left for later.
        sharing.open.lock().expect("lock").push("0b".into());
        let deadline = Instant::now() + Duration::from_secs(20);
        while sharing.meeting.met.lock().expect("lock").len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let met = sharing.meeting.met.lock().expect("lock").clone();
        assert_eq!(
            met,
            [true, true],
            "the batch's second datagram waited for its first"
        );
    }

    /// Two threads receiving from a new socket for `datagrams`, named
    /// `prefix` and a number, once both sleep waiting for it: its address
    /// and turn.
    #[cfg(target_os = "linux")]
    fn two_asleep<D: Datagrams>(prefix: &str, datagrams: Arc<D>) -> (SocketAddr, Arc<Turn>) {
        let socket = Arc::new(bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind"));
        let turn = Arc::new(Turn::new());
        for i in 0..2 {
            let (socket, turn, datagrams) = (socket.clone(), turn.clone(), datagrams.clone());
            let readable = Readable::new(&socket).expect("epoll");
            // Left running: the test process ends them.
            std::thread::Builder::new()
                .name(format!("{prefix}{i}"))
                .spawn(move || receive(socket, readable, turn, 0, &*datagrams))
                .expect("spawn");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while asleep(prefix) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (socket.local_addr().expect("addr"), turn)
    }

    #[cfg(target_os = "linux")]
    /// This process's threads whose name starts with `prefix` and that
    /// sleep (state S in /proc).
    fn asleep(prefix: &str) -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        tasks
            .flatten()
            .filter(|task| {
                let read =
                    |file| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
                let stat = read("stat");
                // The state follows the name, which is in parentheses.
                let state = stat
                    .rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('S'));
                read("comm").starts_with(prefix) && state == Some(true)
            })
            .count()
    }
}
