// SPDX-License-Identifier: GPL-2.0

//! The data path: queues of requests and completions shared with the
//! kernel's worker (see `rings.rst`).

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memreg_sys as raw;

use crate::{einval, eproto, sys, Device, Peer};

const SLOT_SIZE: usize = size_of::<raw::memreg_sq_slot>();
const CQE_SIZE: usize = size_of::<raw::memreg_cqe>();
/// Offsets in the master ring's mappings.
const MASTER_TAIL: usize = offset_of!(raw::memreg_master_ring, tail);
const MASTER_OVERFLOWS: usize = offset_of!(raw::memreg_master_ring, overflows);
const MASTER_HEAD: usize = offset_of!(raw::memreg_master_user, head);
const MASTER_ARM: usize = offset_of!(raw::memreg_master_user, arm);

/// Claims that find a slot of a later lap while `insert` stays put: only
/// garbage in the ring's words does that (as `MRQ_MAX_RELOADS` in the
/// kselftests' `memreg_ring.h`).
const MAX_RELOADS: u32 = 65536;
/// Waiting steps that yield before the wait polls the file.
const YIELD_SPINS: u32 = 64;

/// The number of entries between `head` and `tail` of a ring of `entries`
/// entries, 0 when the distance makes no sense (more than `entries`): a head
/// or tail that is garbage reads as an empty ring.
pub(crate) fn ring_ready(head: u32, tail: u32, entries: u32) -> u32 {
    let n = tail.wrapping_sub(head);
    if n > entries {
        0
    } else {
        n
    }
}

/// What a poster learns from a slot's sequence at position `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Free for this lap: claim it.
    Free,
    /// Not yet freed by the worker: the ring is full.
    Full,
    /// Another poster took it: reload `insert`.
    Taken,
}

/// Classifies a slot whose sequence is `seq` for a poster at `pos`, as the
/// posting protocol says (the signed distance of the two).
pub(crate) fn slot_state(seq: u64, pos: u64) -> SlotState {
    match (seq.wrapping_sub(pos) as i64).signum() {
        0 => SlotState::Free,
        -1 => SlotState::Full,
        _ => SlotState::Taken,
    }
}

/// A request, the descriptor posted on a submission ring
/// (`struct memreg_sqe`).
///
/// The constructors fill the fields the operation uses and leave the others
/// zero, as the kernel requires; offsets count from each registration's
/// `region_addr`.
///
/// Building a request is safe: it is only numbers. Posting one is not, as
/// the kernel then writes the memory it names by key: see the `# Safety`
/// section of [`Queue::try_submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    sqe: raw::memreg_sqe,
}

impl Request {
    fn op(opcode: u32) -> Request {
        Request {
            sqe: raw::memreg_sqe {
                opcode: opcode as u8,
                ..Default::default()
            },
        }
    }

    /// A request that moves data: every field as given, the rest zero
    /// (libmemreg's `memreg_prep_rw`).
    fn rw(
        opcode: u32,
        peer: u32,
        key: u64,
        offset: u64,
        src_key: u64,
        src_offset: u64,
        len: u64,
    ) -> Request {
        let mut r = Request::op(opcode);
        r.sqe.peer = peer;
        r.sqe.key = key;
        r.sqe.offset = offset;
        r.sqe.src_key = src_key;
        r.sqe.src_offset = src_offset;
        r.sqe.length = len;
        r
    }

    /// `MEMREG_OP_NOP`: completes with status 0.
    pub fn nop() -> Request {
        Request::op(raw::MEMREG_OP_NOP)
    }

    /// `MEMREG_OP_FENCE`: completes after everything posted before it.
    pub fn fence() -> Request {
        Request::op(raw::MEMREG_OP_FENCE)
    }

    /// `MEMREG_OP_DEREGISTER`: drops a reference on the local key `key`.
    pub fn deregister(key: u64) -> Request {
        let mut r = Request::op(raw::MEMREG_OP_DEREGISTER);
        r.sqe.key = key;
        r
    }

    /// `MEMREG_OP_COPY`: `len` bytes from `(src_key, src_offset)` to
    /// `(dst_key, dst_offset)`, local keys of this context.
    pub fn copy(dst_key: u64, dst_offset: u64, src_key: u64, src_offset: u64, len: u64) -> Request {
        Request::rw(
            raw::MEMREG_OP_COPY,
            0,
            dst_key,
            dst_offset,
            src_key,
            src_offset,
            len,
        )
    }

    /// `MEMREG_OP_WRITE`: `len` bytes from the local `(local_key,
    /// local_offset)` to the peer's `(remote_key, remote_offset)`.
    pub fn write(
        peer: Peer,
        remote_key: u64,
        remote_offset: u64,
        local_key: u64,
        local_offset: u64,
        len: u64,
    ) -> Request {
        Request::rw(
            raw::MEMREG_OP_WRITE,
            peer.0,
            remote_key,
            remote_offset,
            local_key,
            local_offset,
            len,
        )
    }

    /// `MEMREG_OP_READ`: `len` bytes from the peer's `(remote_key,
    /// remote_offset)` to the local `(local_key, local_offset)`.
    pub fn read(
        peer: Peer,
        local_key: u64,
        local_offset: u64,
        remote_key: u64,
        remote_offset: u64,
        len: u64,
    ) -> Request {
        Request::rw(
            raw::MEMREG_OP_READ,
            peer.0,
            local_key,
            local_offset,
            remote_key,
            remote_offset,
            len,
        )
    }

    /// `MEMREG_OP_SEND`: `len` bytes at `(key, offset)` to the oldest RECV
    /// posted on the connected queue.
    pub fn send(key: u64, offset: u64, len: u64) -> Request {
        let mut r = Request::op(raw::MEMREG_OP_SEND);
        r.sqe.src_key = key;
        r.sqe.src_offset = offset;
        r.sqe.length = len;
        r
    }

    /// `MEMREG_OP_SEND` with 64 bits of immediate data (`MEMREG_SQE_IMM`).
    pub fn send_imm(key: u64, offset: u64, len: u64, imm: u64) -> Request {
        let mut r = Request::send(key, offset, len);
        r.sqe.flags = raw::MEMREG_SQE_IMM as u8;
        r.sqe.key = imm;
        r
    }

    /// `MEMREG_OP_RECV`: a buffer of `len` bytes at `(key, offset)` for the
    /// next SEND to this queue.
    pub fn recv(key: u64, offset: u64, len: u64) -> Request {
        let mut r = Request::op(raw::MEMREG_OP_RECV);
        r.sqe.key = key;
        r.sqe.offset = offset;
        r.sqe.length = len;
        r
    }

    /// `MEMREG_OP_POOL_ALLOC`: a buffer of `size` bytes from pool `pool`,
    /// never waiting; it completes with the address in
    /// [`Completion::bytes`] and the key in [`Completion::imm_data`].
    pub fn pool_alloc(pool: u32, size: u64) -> Request {
        let mut r = Request::op(raw::MEMREG_OP_POOL_ALLOC);
        r.sqe.peer = pool;
        r.sqe.length = size;
        r
    }

    /// `MEMREG_OP_POOL_FREE`: gives back the buffer at `addr` of pool `pool`.
    ///
    /// The buffer must not be used once this is posted: a
    /// [`crate::PoolBuffer`] still alive for it would lend the bytes the
    /// next allocation is given (see [`Queue::try_submit`]).
    pub fn pool_free(pool: u32, addr: u64) -> Request {
        let mut r = Request::op(raw::MEMREG_OP_POOL_FREE);
        r.sqe.peer = pool;
        r.sqe.offset = addr;
        r
    }

    /// Sets the value returned as is in the completion.
    pub fn user_data(mut self, user_data: u64) -> Request {
        self.sqe.user_data = user_data;
        self
    }

    /// The descriptor as posted.
    pub fn sqe(&self) -> &raw::memreg_sqe {
        &self.sqe
    }
}

/// A completion (`struct memreg_cqe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request's user data.
    pub user_data: u64,
    /// Bytes moved (COPY, WRITE, READ, SEND, RECV), a POOL_ALLOC's buffer
    /// address, 0 otherwise.
    pub bytes: u64,
    /// 0, or a negative errno.
    pub status: i32,
    /// `MEMREG_CQE_*`.
    pub flags: u32,
    /// A RECV's immediate data, a POOL_ALLOC's key, 0 otherwise.
    pub imm_data: u64,
}

impl Completion {
    /// The status as a result: `Ok(bytes)`, or the errno. A positive status,
    /// which the kernel never writes, is `EPROTO`.
    pub fn result(&self) -> io::Result<u64> {
        match self.status {
            0 => Ok(self.bytes),
            s if s < 0 && s > -4096 => Err(io::Error::from_raw_os_error(-s)),
            _ => Err(eproto()),
        }
    }
}

impl From<raw::memreg_cqe> for Completion {
    fn from(c: raw::memreg_cqe) -> Completion {
        Completion {
            user_data: c.user_data,
            bytes: c.bytes,
            status: c.status,
            flags: c.flags,
            imm_data: c.imm_data,
        }
    }
}

/// A queue: a submission ring any number of threads post to without a lock
/// or system call, and a completion ring one thread at a time reads.
///
/// The queue lasts as long as the file; dropping this value unmaps its
/// rings. Reaping methods serialise on an internal lock, so a `&Queue`
/// may be shared between posting threads and a reaping one (looking at an
/// empty completion ring takes no lock).
#[derive(Debug)]
pub struct Queue<'dev> {
    dev: &'dev Device,
    index: u32,
    maps: sys::QueueMaps,
    sq_entries: u32,
    cq_entries: u32,
    /// Held while consuming completions.
    reader: Mutex<()>,
    /// The reader's own completion head: stored only under `reader`, loaded
    /// without it to see that nothing is ready.
    head: AtomicU32,
    doorbells: AtomicU64,
}

impl<'dev> Queue<'dev> {
    pub(crate) fn create(
        dev: &'dev Device,
        sq_entries: u32,
        cq_entries: u32,
        eventfd: Option<BorrowedFd<'_>>,
    ) -> io::Result<Queue<'dev>> {
        if !sq_entries.is_power_of_two()
            || !cq_entries.is_power_of_two()
            || !(2..=raw::MEMREG_MAX_SQ_ENTRIES).contains(&sq_entries)
            || cq_entries < sq_entries
            || cq_entries > raw::MEMREG_MAX_CQ_ENTRIES
        {
            return Err(einval());
        }
        let mut c = raw::memreg_queue_create {
            sq_entries,
            cq_entries,
            eventfd: eventfd.map_or(-1, |fd| fd.as_raw_fd()),
            ..Default::default()
        };
        sys::queue_create(dev.fd(), &mut c)?;
        let sq_need = raw::MEMREG_SQ_SLOTS_OFFSET as usize + sq_entries as usize * SLOT_SIZE;
        let cq_need = raw::MEMREG_CQ_ENTRIES_OFFSET as usize + cq_entries as usize * CQE_SIZE;
        let sq_bytes = usize::try_from(c.sq_bytes).map_err(|_| eproto())?;
        let cq_bytes = usize::try_from(c.cq_bytes).map_err(|_| eproto())?;
        if sq_bytes < sq_need || cq_bytes < cq_need || c.queue >= raw::MEMREG_MAX_QUEUES {
            return Err(eproto());
        }
        let sq = sys::Mmap::map_shared(dev.fd(), sq_bytes, true, raw::memreg_mmap_sq(c.queue))?;
        let cq = sys::Mmap::map_shared(dev.fd(), cq_bytes, false, raw::memreg_mmap_cq(c.queue))?;
        let maps = sys::QueueMaps::new(sq, cq, sq_entries, cq_entries)?;
        let head = maps.cq_head().load(Ordering::Relaxed);
        Ok(Queue {
            dev,
            index: c.queue,
            maps,
            sq_entries,
            cq_entries,
            reader: Mutex::new(()),
            head: AtomicU32::new(head),
            doorbells: AtomicU64::new(0),
        })
    }

    /// The queue's index in its file.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The number of submission slots.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// The number of completion entries.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// The DOORBELL calls made through this value.
    pub fn doorbells(&self) -> u64 {
        self.doorbells.load(Ordering::Relaxed)
    }

    /// Wakes the queue's worker (`MEMREG_IOC_DOORBELL`). Posting and reaping
    /// ring it when the protocol says so; an unneeded doorbell is harmless.
    pub fn doorbell(&self) -> io::Result<()> {
        self.doorbells.fetch_add(1, Ordering::Relaxed);
        let mut d = raw::memreg_doorbell {
            queue: self.index,
            ..Default::default()
        };
        sys::doorbell(self.dev.fd(), &mut d)
    }

    /// Claims a slot: its position, `EAGAIN` (`WouldBlock`) when the ring is
    /// full, `EBUSY` when its words make no sense.
    fn claim(&self) -> io::Result<u64> {
        let insert = self.maps.insert();
        let mut pos = insert.load(Ordering::Relaxed);
        let mut reloads = 0;
        loop {
            let seq = self.maps.slot_seq(pos).load(Ordering::Acquire);
            match slot_state(seq, pos) {
                SlotState::Free => {
                    match insert.compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Ok(pos),
                        Err(found) => pos = found,
                    }
                }
                SlotState::Full => return Err(io::Error::from_raw_os_error(libc::EAGAIN)),
                SlotState::Taken => {
                    let now = insert.load(Ordering::Relaxed);
                    if now == pos {
                        reloads += 1;
                        if reloads > MAX_RELOADS {
                            return Err(io::Error::from_raw_os_error(libc::EBUSY));
                        }
                    }
                    pos = now;
                }
            }
        }
    }

    /// Posts `req` without waiting: `WouldBlock` (`EAGAIN`) when the ring is
    /// full, `EBUSY` when the ring's words make no sense, or the error of
    /// the doorbell it rang after publishing (the request is posted then).
    ///
    /// This is the documented protocol: claim slot `pos` by its sequence and
    /// a compare-and-swap of `insert`, write the descriptor, publish it with
    /// a release store of `seq = pos + 1`, issue a full barrier, then ring
    /// the doorbell only if the worker sleeps (`MEMREG_QUEUE_NEED_WAKEUP`)
    /// and this is the request it takes next (`sq_head == pos`).
    ///
    /// # Safety
    ///
    /// The kernel moves data by the keys and offsets `req` names, as a
    /// device does by DMA, from now until the request's completion is
    /// reaped from this queue (as the tokio-rs `io-uring` crate's
    /// `SubmissionQueue::push`, which is `unsafe` for the same reason). A
    /// key is a number: nothing ties it to a Rust borrow any more. So:
    ///
    /// - every key and offset range the request names for writing (the
    ///   destination of a COPY or a READ, the buffer of a RECV, the
    ///   destination of a WRITE to a peer whose memory is in this process)
    ///   must name memory that no Rust reference borrows, and that is not
    ///   freed or reused for anything else, until the completion is reaped
    ///   (memory that is unmapped meanwhile is fine: the unmapping ends the
    ///   registration first, and the request then fails with `ENOENT`);
    /// - the buffer a `POOL_FREE` gives back must not be used afterwards:
    ///   no [`crate::PoolBuffer`] of it may be alive (or it lends the bytes
    ///   the next allocation is given too).
    ///
    /// Requests that write no memory (NOP, FENCE, DEREGISTER, POOL_ALLOC,
    /// and a SEND, whose receiver posted the RECV) ask nothing beyond the
    /// usual.
    #[allow(unsafe_code)] // An `unsafe fn` declaration; it contains no unsafe code.
    pub unsafe fn try_submit(&self, req: &Request) -> io::Result<()> {
        self.post(req)
    }

    /// Posts `req`, waiting for room while the ring is full (someone must
    /// reap completions meanwhile: the worker stops taking requests while
    /// the completion ring is full).
    ///
    /// # Safety
    ///
    /// As for [`Queue::try_submit`]: the memory a request writes must not
    /// be borrowed by any Rust reference until its completion is reaped,
    /// and a `POOL_FREE`'s buffer must not be used afterwards.
    #[allow(unsafe_code)] // An `unsafe fn` declaration; it contains no unsafe code.
    pub unsafe fn submit(&self, req: &Request) -> io::Result<()> {
        self.post_timeout(req, None)
    }

    /// Posts `req`, waiting at most `timeout` (`None`: no limit) for room;
    /// `ETIMEDOUT` then.
    ///
    /// # Safety
    ///
    /// As for [`Queue::try_submit`]: the memory a request writes must not
    /// be borrowed by any Rust reference until its completion is reaped,
    /// and a `POOL_FREE`'s buffer must not be used afterwards. A request
    /// that was not posted (an error) asks nothing.
    #[allow(unsafe_code)] // An `unsafe fn` declaration; it contains no unsafe code.
    pub unsafe fn submit_timeout(
        &self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.post_timeout(req, timeout)
    }

    /// The posting protocol of [`Queue::try_submit`]. Private: the memory
    /// `req` lets the kernel write is the caller's to vouch for, as the
    /// public `unsafe fn`s say; within the crate only the unit tests call
    /// it, with requests that write nothing.
    fn post(&self, req: &Request) -> io::Result<()> {
        let pos = self.claim()?;
        self.maps.write_sqe(pos, &req.sqe);
        self.maps
            .slot_seq(pos)
            .store(pos.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        if self.maps.flags(Ordering::Relaxed) & raw::MEMREG_QUEUE_NEED_WAKEUP != 0
            && self.maps.sq_head(Ordering::Relaxed) == pos
        {
            self.doorbell()?;
        }
        Ok(())
    }

    /// The waiting of [`Queue::submit_timeout`] around [`Queue::post`]
    /// (private for the same reason).
    fn post_timeout(&self, req: &Request, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut spins = 0;
        loop {
            match self.post(req) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {}
                other => return other,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            spins += 1;
            if spins < YIELD_SPINS {
                std::thread::yield_now();
            } else {
                // POLLOUT: no submission ring of the file is full. Another
                // queue's full ring hides it, hence the short timeout.
                match sys::poll(self.dev.fd(), libc::POLLOUT, 1) {
                    Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                    _ => {}
                }
            }
        }
    }

    fn lock_reader(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data: a panicking holder left nothing
        // inconsistent.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumes the completions before `head`: stores it as the reader's
    /// head and, with release ordering, as `cq_head`. Under the reader lock.
    fn set_head(&self, head: u32) {
        self.head.store(head, Ordering::Relaxed);
        self.maps.cq_head().store(head, Ordering::Release);
    }

    /// Completions written and not yet consumed.
    pub fn ready(&self) -> u32 {
        ring_ready(
            self.head.load(Ordering::Relaxed),
            self.maps.cq_tail(Ordering::Acquire),
            self.cq_entries,
        )
    }

    /// After storing a new head: a full barrier, then the doorbell if the
    /// worker stopped for a full completion ring.
    fn after_reap(&self) {
        fence(Ordering::SeqCst);
        if self.maps.flags(Ordering::Relaxed) & raw::MEMREG_QUEUE_CQ_FULL != 0 {
            // Fails only for a queue the file does not have, or after fork.
            let _ = self.doorbell();
        }
    }

    /// Consumes the next completion if one is ready (no system call, unless
    /// the worker stopped for a full completion ring and needs the doorbell).
    ///
    /// Made to be called in a busy-polling loop: while nothing is ready it
    /// loads two words and takes no lock.
    #[inline]
    pub fn peek_completion(&self) -> Option<Completion> {
        // Nothing written past the head this value last stored. Another
        // reader may be moving the head meanwhile: "nothing ready" is then
        // as true as what the lock would have shown a moment later.
        if self.maps.cq_tail(Ordering::Relaxed) == self.head.load(Ordering::Relaxed) {
            return None;
        }
        self.consume_one()
    }

    /// [`Queue::peek_completion`] once something may be ready.
    #[inline(never)]
    fn consume_one(&self) -> Option<Completion> {
        let _reader = self.lock_reader();
        let head = self.head.load(Ordering::Relaxed);
        if ring_ready(head, self.maps.cq_tail(Ordering::Acquire), self.cq_entries) == 0 {
            return None;
        }
        let c = self.maps.read_cqe(head);
        self.set_head(head.wrapping_add(1));
        self.after_reap();
        Some(Completion::from(c))
    }

    /// An iterator consuming the completions ready now. It holds the
    /// queue's reader lock: other reaping calls of the same thread that find
    /// a completion ready ([`Queue::peek_completion`],
    /// [`Queue::wait_completion`]) wait until it is dropped, so drop it
    /// first.
    pub fn completions(&self) -> Completions<'_, 'dev> {
        let reader = self.lock_reader();
        let head = self.head.load(Ordering::Relaxed);
        let n = ring_ready(head, self.maps.cq_tail(Ordering::Acquire), self.cq_entries);
        Completions {
            queue: self,
            _reader: reader,
            head,
            end: head.wrapping_add(n),
            consumed: false,
        }
    }

    /// Asks for one wake-up on the next completion of this queue: stores
    /// `cq_arm`, then issues a full barrier. Look at the ring once more
    /// before sleeping.
    pub fn arm(&self) {
        self.maps.cq_arm().store(1, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Consumes the next completion, waiting at most `timeout` (`None`: no
    /// limit); `Ok(None)` on timeout.
    ///
    /// It arms the queue, issues a full barrier and looks at the tail again
    /// before it blocks in `poll(2)` for `POLLIN`. The file is readable
    /// while any of its rings has something unread (another queue's
    /// completions, events), so when `poll` reports readiness that is not
    /// this queue's, the wait backs off for a millisecond at a time rather
    /// than spin.
    pub fn wait_completion(&self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(c) = self.peek_completion() {
                return Ok(Some(c));
            }
            self.arm();
            if self.ready() > 0 {
                continue;
            }
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(self.peek_completion());
                    }
                    // Round up, so a short wait does not become a spin.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let revents = match sys::poll(self.dev.fd(), libc::POLLIN, ms) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if revents & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            if revents != 0 && self.ready() == 0 {
                let left = deadline.map_or(Duration::from_millis(1), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                std::thread::sleep(left.min(Duration::from_millis(1)));
            }
        }
    }

    /// Connects this queue to queue `remote_queue` of the peer behind
    /// `peer`: SENDs posted here fill RECVs posted there, waiting up to
    /// `rnr_timeout_ms` for one (`MEMREG_IOC_QUEUE_CONNECT`).
    pub fn connect(&self, peer: Peer, remote_queue: u32, rnr_timeout_ms: u32) -> io::Result<()> {
        let mut c = raw::memreg_queue_connect {
            queue: self.index,
            peer: peer.0,
            remote_queue,
            rnr_timeout_ms,
            ..Default::default()
        };
        sys::queue_connect(self.dev.fd(), &mut c)
    }
}

/// The iterator [`Queue::completions`] returns. It holds the queue's reader
/// lock; each completion it yields is consumed (the head moves past it with
/// a release store), and dropping it rings the doorbell if the worker
/// stopped for a full completion ring.
#[derive(Debug)]
pub struct Completions<'q, 'dev> {
    queue: &'q Queue<'dev>,
    _reader: MutexGuard<'q, ()>,
    head: u32,
    end: u32,
    consumed: bool,
}

impl Iterator for Completions<'_, '_> {
    type Item = Completion;

    fn next(&mut self) -> Option<Completion> {
        if self.head == self.end {
            return None;
        }
        let c = self.queue.maps.read_cqe(self.head);
        self.head = self.head.wrapping_add(1);
        self.queue.set_head(self.head);
        self.consumed = true;
        Some(Completion::from(c))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.wrapping_sub(self.head) as usize;
        (n, Some(n))
    }
}

impl Drop for Completions<'_, '_> {
    fn drop(&mut self) {
        if self.consumed {
            self.queue.after_reap();
        }
    }
}

/// The context's master ring: the indexes of queues with new completions
/// (a hint of where to look; the completion rings are what counts).
#[derive(Debug)]
pub struct MasterRing<'dev> {
    dev: &'dev Device,
    ring: sys::Mmap,
    user: sys::Mmap,
    head: u32,
}

impl<'dev> MasterRing<'dev> {
    /// Maps the master ring of `dev`, which its first queue creates
    /// (`EINVAL` before).
    pub fn map(dev: &'dev Device) -> io::Result<MasterRing<'dev>> {
        let page = sys::page_size();
        let need = raw::MEMREG_MASTER_ENTRIES_OFFSET as usize
            + raw::MEMREG_MASTER_ENTRIES as usize * size_of::<u32>();
        let len = need.div_ceil(page) * page;
        let ring = sys::Mmap::map_shared(dev.fd(), len, false, raw::MEMREG_MMAP_MASTER.into())?;
        let user =
            sys::Mmap::map_shared(dev.fd(), page, true, raw::MEMREG_MMAP_MASTER_USER.into())?;
        let head = user.load_u32(MASTER_HEAD, Ordering::Relaxed)?;
        Ok(MasterRing {
            dev,
            ring,
            user,
            head,
        })
    }

    /// Consumes the queue indexes written so far into `out`; returns how
    /// many. A head that makes no sense reads as nothing written.
    pub fn read(&mut self, out: &mut Vec<u32>) -> usize {
        let tail = self
            .ring
            .load_u32(MASTER_TAIL, Ordering::Acquire)
            .unwrap_or(self.head);
        let n = ring_ready(self.head, tail, raw::MEMREG_MASTER_ENTRIES);
        for _ in 0..n {
            let i = (self.head & (raw::MEMREG_MASTER_ENTRIES - 1)) as usize;
            let off = raw::MEMREG_MASTER_ENTRIES_OFFSET as usize + i * size_of::<u32>();
            match self.ring.load_u32(off, Ordering::Relaxed) {
                Ok(q) => out.push(q),
                Err(_) => break,
            }
            self.head = self.head.wrapping_add(1);
        }
        if n > 0 {
            let _ = self
                .user
                .store_u32(MASTER_HEAD, self.head, Ordering::Release);
        }
        n as usize
    }

    /// Asks for one wake-up of `poll`/`epoll` on the next entry, then
    /// issues a full barrier.
    pub fn arm(&self) {
        let _ = self.user.store_u32(MASTER_ARM, 1, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Entries not written because the ring was full; a reader that sees it
    /// grow looks at every queue.
    pub fn overflows(&self) -> u64 {
        self.ring
            .load_u64(MASTER_OVERFLOWS, Ordering::Acquire)
            .unwrap_or(0)
    }

    /// The device the ring belongs to.
    pub fn device(&self) -> &'dev Device {
        self.dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::AtomicBool;

    /// Offsets in the submission ring's header (`struct memreg_sq_user`).
    const CQ_HEAD: usize = offset_of!(raw::memreg_sq_user, cq_head);
    /// Offsets in a submission slot (`struct memreg_sq_slot`).
    const SLOT_SEQ: usize = offset_of!(raw::memreg_sq_slot, seq);
    const SLOT_SQE: usize = offset_of!(raw::memreg_sq_slot, sqe);
    /// Offsets in the completion ring's header (`struct memreg_cq_ring`).
    const SQ_HEAD: usize = offset_of!(raw::memreg_cq_ring, sq_head);
    const CQ_TAIL: usize = offset_of!(raw::memreg_cq_ring, cq_tail);
    const CQ_FLAGS: usize = offset_of!(raw::memreg_cq_ring, flags);

    /// A shared file of `len` zero bytes standing in for a ring's pages.
    fn shared_file(len: u64, tag: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("memreg-queue-{}-{tag}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temp file");
        let _ = std::fs::remove_file(&path);
        f.set_len(len).expect("set_len");
        f
    }

    /// A worker following the kernel's side of the protocol over the same
    /// pages, until `stop`: takes slot `h` when its seq is `h + 1`, frees it
    /// for the next lap, publishes `sq_head`, and completes each request
    /// when the completion ring has room (setting `CQ_FULL` meanwhile).
    fn fake_worker(
        sq: &sys::Mmap,
        cq: &sys::Mmap,
        sq_entries: u32,
        cq_entries: u32,
        stop: &AtomicBool,
    ) {
        let mut h = 0u64;
        let mut tail = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let slot = raw::MEMREG_SQ_SLOTS_OFFSET as usize
                + (h & u64::from(sq_entries - 1)) as usize * SLOT_SIZE;
            let seq = sq
                .load_u64(slot + SLOT_SEQ, Ordering::Acquire)
                .expect("seq");
            if seq != h + 1 {
                std::thread::yield_now();
                continue;
            }
            let sqe: raw::memreg_sqe = sq.read(slot + SLOT_SQE).expect("sqe");
            sq.store_u64(
                slot + SLOT_SEQ,
                h + u64::from(sq_entries),
                Ordering::Release,
            )
            .expect("seq");
            h += 1;
            cq.store_u64(SQ_HEAD, h, Ordering::Release)
                .expect("sq_head");
            loop {
                let head = sq.load_u32(CQ_HEAD, Ordering::Acquire).expect("cq_head");
                if tail.wrapping_sub(head) < cq_entries {
                    break;
                }
                cq.store_u32(CQ_FLAGS, raw::MEMREG_QUEUE_CQ_FULL, Ordering::Release)
                    .expect("flags");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::yield_now();
            }
            cq.store_u32(CQ_FLAGS, 0, Ordering::Release).expect("flags");
            let off = raw::MEMREG_CQ_ENTRIES_OFFSET as usize
                + (tail & (cq_entries - 1)) as usize * CQE_SIZE;
            let cqe = raw::memreg_cqe {
                user_data: sqe.user_data,
                bytes: sqe.length,
                ..Default::default()
            };
            cq.write(off, &cqe).expect("cqe");
            tail = tail.wrapping_add(1);
            cq.store_u32(CQ_TAIL, tail, Ordering::Release)
                .expect("tail");
        }
    }

    /// Four posters and one reaper through a small queue and a fake worker:
    /// every request completes exactly once.
    #[test]
    fn many_posters_against_a_fake_worker() {
        const SQ: u32 = 8;
        const CQ: u32 = 16;
        const EACH: u64 = 2000;
        let sq_file = shared_file(4096, "sq");
        let cq_file = shared_file(4096, "cq");
        let sq = sys::Mmap::map_shared(sq_file.as_fd(), 4096, true, 0).expect("sq");
        for i in 0..SQ as usize {
            let off = raw::MEMREG_SQ_SLOTS_OFFSET as usize + i * SLOT_SIZE + SLOT_SEQ;
            sq.store_u64(off, i as u64, Ordering::Relaxed)
                .expect("init seq");
        }
        let worker_sq = sys::Mmap::map_shared(sq_file.as_fd(), 4096, true, 0).expect("sq");
        let worker_cq = sys::Mmap::map_shared(cq_file.as_fd(), 4096, true, 0).expect("cq");
        let cq = sys::Mmap::map_shared(cq_file.as_fd(), 4096, false, 0).expect("cq");
        let dev = Device::from_fd(OwnedFd::from(shared_file(0, "dev")));
        let q = Queue {
            dev: &dev,
            index: 0,
            maps: sys::QueueMaps::new(sq, cq, SQ, CQ).expect("maps"),
            sq_entries: SQ,
            cq_entries: CQ,
            reader: Mutex::new(()),
            head: AtomicU32::new(0),
            doorbells: AtomicU64::new(0),
        };
        let stop = AtomicBool::new(false);
        let mut seen = HashSet::new();
        std::thread::scope(|s| {
            s.spawn(|| fake_worker(&worker_sq, &worker_cq, SQ, CQ, &stop));
            for t in 0..4u64 {
                let q = &q;
                s.spawn(move || {
                    for i in 0..EACH {
                        let req = Request::nop().user_data(t * EACH + i);
                        q.post_timeout(&req, Some(Duration::from_secs(20)))
                            .expect("submit");
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while (seen.len() as u64) < 4 * EACH && Instant::now() < deadline {
                for c in q.completions() {
                    assert!(seen.insert(c.user_data), "duplicate {c:?}");
                }
                // A full completion ring rang the (fake) doorbell.
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(seen.len() as u64, 4 * EACH);
        assert!(q.peek_completion().is_none());
        assert_eq!(q.ready(), 0);
    }

    /// Garbage in the words a poster reads makes posting fail, never
    /// panic or write outside the ring.
    #[test]
    fn garbage_rings_fail_cleanly() {
        let sq_file = shared_file(4096, "gsq");
        let cq_file = shared_file(4096, "gcq");
        let sq = sys::Mmap::map_shared(sq_file.as_fd(), 4096, true, 0).expect("sq");
        let cq = sys::Mmap::map_shared(cq_file.as_fd(), 4096, false, 0).expect("cq");
        let cq_w = sys::Mmap::map_shared(cq_file.as_fd(), 4096, true, 0).expect("cq");
        let dev = Device::from_fd(OwnedFd::from(shared_file(0, "gdev")));
        let q = Queue {
            dev: &dev,
            index: 0,
            maps: sys::QueueMaps::new(sq, cq, 4, 4).expect("maps"),
            sq_entries: 4,
            cq_entries: 4,
            reader: Mutex::new(()),
            head: AtomicU32::new(0),
            doorbells: AtomicU64::new(0),
        };
        // Every seq behind insert: full.
        q.maps.insert().store(1000, Ordering::Relaxed);
        let e = q.post(&Request::nop()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A seq ahead of an insert that never moves: EBUSY after the reloads.
        for i in 0..4 {
            q.maps.slot_seq(i).store(2000, Ordering::Relaxed);
        }
        let e = q.post(&Request::nop()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        // A tail far from the head reads as nothing to reap.
        for tail in [5u32, 0x8000_0000, u32::MAX] {
            cq_w.store_u32(CQ_TAIL, tail, Ordering::Release)
                .expect("tail");
            assert!(q.peek_completion().is_none(), "tail {tail:#x}");
            assert_eq!(q.ready(), 0);
        }
        // A sane tail yields what the entries hold, whatever they hold.
        cq_w.store_u32(CQ_TAIL, 2, Ordering::Release).expect("tail");
        assert_eq!(q.completions().count(), 2);
    }

    #[test]
    fn ready_counts_and_garbage() {
        assert_eq!(ring_ready(0, 0, 64), 0);
        assert_eq!(ring_ready(0, 64, 64), 64);
        assert_eq!(ring_ready(0, 65, 64), 0, "more than a ring: garbage");
        assert_eq!(ring_ready(u32::MAX, 3, 64), 4, "wraps");
        assert_eq!(ring_ready(5, 4, 64), 0, "tail behind head: garbage");
        assert_eq!(ring_ready(0xdead_beef, 1, 16384), 0);
        for head in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            for tail in [0u32, 1, 63, 64, 0x8000_0000, u32::MAX] {
                assert!(ring_ready(head, tail, 64) <= 64);
            }
        }
    }

    #[test]
    fn slot_states_follow_the_signed_distance() {
        assert_eq!(slot_state(5, 5), SlotState::Free);
        assert_eq!(slot_state(4, 5), SlotState::Full);
        assert_eq!(slot_state(6, 5), SlotState::Taken);
        // A slot freed for the next lap (seq = h + entries) is taken for pos h.
        assert_eq!(slot_state(64, 0), SlotState::Taken);
        // Wrapping positions.
        assert_eq!(slot_state(0, u64::MAX), SlotState::Taken);
        assert_eq!(slot_state(u64::MAX, 0), SlotState::Full);
        assert_eq!(slot_state(u64::MAX, u64::MAX), SlotState::Free);
    }

    #[test]
    fn requests_encode_their_fields_only() {
        let r = Request::nop().user_data(7);
        assert_eq!(r.sqe().opcode, raw::MEMREG_OP_NOP as u8);
        assert_eq!(
            *r.sqe(),
            raw::memreg_sqe {
                user_data: 7,
                ..Default::default()
            }
        );
        let c = Request::copy(1, 2, 3, 4, 5).user_data(9);
        assert_eq!(
            *c.sqe(),
            raw::memreg_sqe {
                opcode: raw::MEMREG_OP_COPY as u8,
                user_data: 9,
                key: 1,
                offset: 2,
                src_key: 3,
                src_offset: 4,
                length: 5,
                ..Default::default()
            }
        );
        let w = Request::write(Peer(3), 10, 11, 12, 13, 14);
        assert_eq!(
            (w.sqe().opcode, w.sqe().peer, w.sqe().key, w.sqe().offset),
            (raw::MEMREG_OP_WRITE as u8, 3, 10, 11)
        );
        assert_eq!(
            (w.sqe().src_key, w.sqe().src_offset, w.sqe().length),
            (12, 13, 14)
        );
        let rd = Request::read(Peer(4), 20, 21, 22, 23, 24);
        assert_eq!(
            (
                rd.sqe().opcode,
                rd.sqe().peer,
                rd.sqe().key,
                rd.sqe().offset
            ),
            (raw::MEMREG_OP_READ as u8, 4, 20, 21)
        );
        assert_eq!(
            (rd.sqe().src_key, rd.sqe().src_offset, rd.sqe().length),
            (22, 23, 24)
        );
        let s = Request::send(30, 31, 32);
        assert_eq!((s.sqe().flags, s.sqe().key, s.sqe().src_key), (0, 0, 30));
        let si = Request::send_imm(30, 31, 32, 0xabc);
        assert_eq!(
            (si.sqe().flags, si.sqe().key),
            (raw::MEMREG_SQE_IMM as u8, 0xabc)
        );
        let rv = Request::recv(40, 41, 42);
        assert_eq!(
            (
                rv.sqe().opcode,
                rv.sqe().key,
                rv.sqe().offset,
                rv.sqe().length,
                rv.sqe().src_key
            ),
            (raw::MEMREG_OP_RECV as u8, 40, 41, 42, 0)
        );
        let d = Request::deregister(50);
        assert_eq!(
            (d.sqe().opcode, d.sqe().key),
            (raw::MEMREG_OP_DEREGISTER as u8, 50)
        );
        assert_eq!(Request::fence().sqe().opcode, raw::MEMREG_OP_FENCE as u8);
        let pa = Request::pool_alloc(2, 100);
        assert_eq!(
            (pa.sqe().opcode, pa.sqe().peer, pa.sqe().length),
            (8, 2, 100)
        );
        let pf = Request::pool_free(2, 0x1000);
        assert_eq!(
            (pf.sqe().opcode, pf.sqe().peer, pf.sqe().offset),
            (9, 2, 0x1000)
        );
    }

    #[test]
    fn completion_results() {
        let mut c = Completion {
            user_data: 1,
            bytes: 4096,
            status: 0,
            flags: 0,
            imm_data: 0,
        };
        assert_eq!(c.result().expect("ok"), 4096);
        c.status = -libc::ENOENT;
        assert_eq!(c.result().unwrap_err().raw_os_error(), Some(libc::ENOENT));
        c.status = 5;
        assert_eq!(c.result().unwrap_err().raw_os_error(), Some(libc::EPROTO));
        c.status = i32::MIN;
        assert_eq!(c.result().unwrap_err().raw_os_error(), Some(libc::EPROTO));
    }
}
