// SPDX-License-Identifier: GPL-2.0

//! The memreg crate against the running module, in the guest.
//!
//! Prints KTAP as the kselftests do and exits 0 only when every test passed
//! or was skipped (every one is, without `/dev/memreg`).

use std::collections::HashSet;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memreg::raw;
use memreg::{
    recv_fd, send_fd, Access, AnonMap, Cache, Completion, Device, EventKind, MasterRing, PoolClass,
    Queue, Request, WordState,
};

type TestResult = Result<(), String>;

/// Adds what was being done to an error.
trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), stringify!($cond)));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// Checks that `r` failed with `errno`.
fn expect_errno<T>(r: io::Result<T>, errno: i32, what: &str) -> TestResult {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, want errno {errno}")),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!("{what}: {e}, want errno {errno}")),
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const PAGE: usize = 4096;

/// Posts `req` and waits for its completion (nothing else in flight).
///
/// Should the completion not come, the request may still write the memory
/// it names: the program then bails out at once, with no destructor run, so
/// that nothing frees or uses that memory meanwhile.
///
/// # Safety
///
/// As for [`Queue::submit_timeout`]: no reference may borrow the memory
/// `req` writes until this returns.
unsafe fn run(q: &Queue<'_>, req: &Request) -> Result<Completion, String> {
    // SAFETY: the caller vouches for the memory `req` writes until this
    // returns, which is after its completion was reaped.
    unsafe { q.submit_timeout(req, WAIT) }.ctx("submit")?;
    match q.wait_completion(WAIT) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => bail_out("no completion within 5 s"),
        Err(e) => bail_out(&format!("wait: {e}")),
    }
}

/// Ends the program at once (KTAP "Bail out!"), running no destructor: a
/// request in flight may still write the memory it names.
fn bail_out(why: &str) -> ! {
    println!("Bail out! {why}; a request may still be in flight");
    std::process::exit(1)
}

fn open() -> Result<Device, String> {
    Device::open().ctx("open /dev/memreg")
}

fn version() -> TestResult {
    let dev = open()?;
    let v = dev.version().ctx("version")?;
    check!(v >= raw::MEMREG_ABI_VERSION, "version {v}");
    Ok(())
}

fn register_and_copy() -> TestResult {
    let dev = open()?;
    let mut buf = vec![0u8; 3 * PAGE + 100];
    {
        let reg = dev
            .register(&mut buf[50..], Access::LOCAL)
            .ctx("register")?;
        check!(reg.lkey() != 0 && reg.lkey() != reg.rkey());
        check!(reg.len() == (3 * PAGE + 50) as u64);
        reg.copy_to(10, b"hello memreg").ctx("copy_to")?;
        let mut back = [0u8; 12];
        reg.copy_from(10, &mut back).ctx("copy_from")?;
        check!(&back == b"hello memreg");
        // Past the end of the buffer: refused before the kernel.
        expect_errno(
            reg.copy_to(reg.len() - 4, b"12345"),
            libc::EINVAL,
            "copy past end",
        )?;
        check!(reg.is_valid().ctx("is_valid")?);
        let q = reg.query().ctx("query")?;
        check!(q.is_usable() && q.refcount == 1, "{q:?}");
    }
    // The kernel wrote the buffer itself.
    check!(&buf[60..72] == b"hello memreg");
    let ro = dev
        .register_ro(&buf[..PAGE], Access::LOCAL_READ)
        .ctx("register_ro")?;
    expect_errno(ro.copy_to(0, b"x"), libc::EACCES, "copy_to a shared borrow")?;
    let mut back = [0u8; 12];
    ro.copy_from(60, &mut back).ctx("copy_from ro")?;
    check!(&back == b"hello memreg");
    Ok(())
}

fn invalidation_by_munmap() -> TestResult {
    let dev = open()?;
    dev.map_state_words(512).ctx("map_state_words")?;
    let mut events = dev.setup_events(16, None).ctx("setup_events")?;
    let map = AnonMap::new(4 * PAGE).ctx("mmap")?;
    let reg = dev
        .register_range(map.addr(), map.len(), Access::LOCAL)
        .ctx("register")?;
    check!(reg.slot().is_some(), "no slot");
    check!(reg.word_state() == Some(WordState::Valid));
    check!(reg.is_valid().ctx("is_valid")?);
    check!(!events.pending());
    drop(map);
    // The word ended and the event was written before munmap returned.
    check!(reg.word_state() == Some(WordState::Ended));
    check!(!reg.is_valid().ctx("is_valid")?);
    let evs: Vec<_> = events.events().collect();
    check!(evs.len() == 1, "{evs:?}");
    let e = evs[0];
    check!(e.key == reg.lkey() && e.kind == EventKind::Ended, "{e:?}");
    check!(
        e.cause == raw::MEMREG_INVAL_UNMAP && e.length == 4 * PAGE as u64,
        "{e:?}"
    );
    expect_errno(reg.copy_to(0, b"x"), libc::ENOENT, "copy after munmap")?;
    expect_errno(reg.deregister(), libc::ENOENT, "deregister after munmap")?;
    Ok(())
}

fn errors_carry_errno() -> TestResult {
    let dev = open()?;
    let mut buf = vec![0u8; PAGE];
    expect_errno(
        // SAFETY: nothing is registered on `dev`: the key names no memory.
        unsafe { dev.copy_to_key(0x1234_5678, 0, b"x") },
        libc::ENOENT,
        "copy bad key",
    )?;
    expect_errno(
        dev.deregister_key(0x1234_5678),
        libc::ENOENT,
        "deregister bad key",
    )?;
    expect_errno(dev.query(0x1234_5678), libc::ENOENT, "query bad key")?;
    expect_errno(
        dev.register(&mut buf, Access::from_bits(0)),
        libc::EINVAL,
        "register without rights",
    )?;
    expect_errno(
        dev.register(&mut buf, Access::from_bits(0x10)),
        libc::EINVAL,
        "register unknown right",
    )?;
    expect_errno(
        dev.register(&mut [], Access::LOCAL),
        libc::EINVAL,
        "register empty",
    )?;
    expect_errno(
        dev.register_ro(&buf, Access::LOCAL),
        libc::EINVAL,
        "write right on a shared borrow",
    )?;
    expect_errno(
        dev.register(&mut buf, Access::LOCAL | Access::REMOTE_WRITE),
        libc::EINVAL,
        "remote write right on a borrow",
    )?;
    expect_errno(
        dev.register_ro(&buf, Access::LOCAL_READ | Access::REMOTE_WRITE),
        libc::EINVAL,
        "remote write right on a shared borrow",
    )?;
    expect_errno(
        dev.register_range(0x1000, PAGE, Access::LOCAL),
        libc::EFAULT,
        "register unmapped",
    )?;
    let _ring = dev.setup_events(4, None).ctx("setup_events")?;
    expect_errno(dev.setup_events(4, None), libc::EBUSY, "second event ring")?;
    expect_errno(dev.create_queue(3, 4, None), libc::EINVAL, "bad queue size")?;
    let q = dev.create_queue(4, 4, None).ctx("create_queue")?;
    // SAFETY: nothing is registered on `dev`: keys 1 and 2 name no memory.
    let c = unsafe { run(&q, &Request::copy(1, 0, 2, 0, 8).user_data(5)) }?;
    check!(c.user_data == 5);
    expect_errno(c.result(), libc::ENOENT, "COPY with bad keys")?;
    expect_errno(
        dev.detach_peer(memreg::Peer(77)),
        libc::ENOENT,
        "detach unknown peer",
    )?;
    Ok(())
}

fn cache_hit_without_syscall() -> TestResult {
    let dev = open()?;
    let cache = Cache::new(&dev, 16).ctx("cache")?;
    let map = AnonMap::new(8 * PAGE).ctx("mmap")?;
    let first = cache
        .get(map.addr(), map.len(), Access::LOCAL)
        .ctx("get (miss)")?;
    check!(!first.was_hit());
    let lkey = first.lkey();
    drop(first);
    let before = dev.stats().ctx("stats")?;
    let second = cache
        .get(map.addr(), map.len(), Access::LOCAL)
        .ctx("get (hit)")?;
    let after = dev.stats().ctx("stats")?;
    check!(second.was_hit() && second.lkey() == lkey);
    check!(second.is_valid().ctx("is_valid")?);
    check!(
        after.cache_hits == before.cache_hits
            && after.cache_misses == before.cache_misses
            && after.registrations == before.registrations,
        "the kernel saw the hit: {before:?} -> {after:?}"
    );
    // A sub-range with fewer local rights is served by the same entry.
    let sub = cache
        .get(map.addr() + PAGE, PAGE, Access::LOCAL_READ)
        .ctx("get (covered)")?;
    check!(sub.was_hit() && sub.lkey() == lkey && sub.offset() == PAGE as u64);
    drop(sub);
    let after = dev.stats().ctx("stats")?;
    check!(
        after.cache_hits == before.cache_hits,
        "{before:?} -> {after:?}"
    );
    // SAFETY: the copy writes the first bytes of `map`, which no reference
    // borrows during the call.
    unsafe { dev.copy_to_key(second.lkey(), second.offset(), b"cached") }
        .ctx("copy through the hit")?;
    check!(&map[..6] == b"cached");
    drop(second);
    check!(cache.len() == 1);
    // Dropping the cache drops the entry's kernel reference.
    drop(cache);
    match dev.query(lkey) {
        Ok(q) => check!(q.refcount == 0, "a reference is left: {q:?}"),
        Err(e) => check!(e.raw_os_error() == Some(libc::ENOENT), "query: {e}"),
    }
    Ok(())
}

fn cache_callback_may_call_the_cache() -> TestResult {
    // The callback is 'static, and reaches the cache through a `Weak`: the
    // device lives as long as the program.
    let dev: &'static Device = Box::leak(Box::new(open()?));
    let cache = Arc::new(Cache::new(dev, 16).ctx("cache")?);
    let first = AnonMap::new(PAGE).ctx("mmap")?;
    let second = AnonMap::new(PAGE).ctx("mmap")?;
    let (a1, a2) = (first.addr() as u64, second.addr() as u64);
    for m in [&first, &second] {
        drop(cache.get(m.addr(), PAGE, Access::LOCAL).ctx("get")?);
    }
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    let weak = Arc::downgrade(&cache);
    let second = Mutex::new(Some(second));
    cache.set_invalidate_callback(Box::new(move |info| {
        seen2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.addr);
        // Called back for the first range: unmap the second and make the
        // cache read its event from here.
        let taken = second.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(m) = taken {
            drop(m);
            if let Some(c) = weak.upgrade() {
                let _ = c.process_events();
                let _ = c.len();
            }
        }
    }));
    drop(first);
    cache.process_events().ctx("process_events")?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check!(seen == [a1, a2], "{seen:?}, want [{a1:#x}, {a2:#x}]");
    check!(cache.is_empty(), "{} entries", cache.len());
    Ok(())
}

fn cache_drops_stale_entry_after_remap() -> TestResult {
    let dev = open()?;
    let cache = Cache::new(&dev, 16).ctx("cache")?;
    let fired: Arc<Mutex<Vec<memreg::InvalidateInfo>>> = Arc::default();
    let seen = Arc::clone(&fired);
    cache.set_invalidate_callback(Box::new(move |info| {
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(*info)
    }));
    let map = AnonMap::new(4 * PAGE).ctx("mmap")?;
    let (addr, len) = (map.addr(), map.len());
    let old = cache.get(addr, len, Access::LOCAL).ctx("get")?.lkey();
    drop(map);
    let map = AnonMap::at(addr, len).ctx("mmap at the same address")?;
    let mr = cache.get(addr, len, Access::LOCAL).ctx("get again")?;
    check!(!mr.was_hit(), "a stale entry was hit");
    check!(mr.lkey() != old, "the old key came back");
    check!(mr.is_valid().ctx("is_valid")?);
    let fired = fired.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check!(fired.len() == 1, "{fired:?}");
    check!(
        fired[0].lkey == old && fired[0].kind == EventKind::Ended,
        "{fired:?}"
    );
    check!(fired[0].cause == raw::MEMREG_INVAL_UNMAP, "{fired:?}");
    drop(mr);
    drop(map);
    Ok(())
}

fn cache_invalidate_callback_and_lru() -> TestResult {
    let dev = open()?;
    let cache = Cache::new(&dev, 2).ctx("cache")?;
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&count);
    cache.set_invalidate_callback(Box::new(move |_| {
        c2.fetch_add(1, Ordering::Relaxed);
    }));
    let map = AnonMap::new(PAGE).ctx("mmap")?;
    let held = cache.get(map.addr(), PAGE, Access::LOCAL).ctx("get")?;
    drop(map);
    check!(cache.process_events().ctx("process_events")? == 1);
    check!(count.load(Ordering::Relaxed) == 1);
    check!(!held.is_valid().ctx("is_valid")?);
    drop(held);
    check!(cache.is_empty());
    // Four unused entries with room for two: two are deregistered.
    let maps: Vec<AnonMap> = (0..4)
        .map(|_| AnonMap::new(PAGE))
        .collect::<io::Result<_>>()
        .ctx("mmap")?;
    for m in &maps {
        drop(cache.get(m.addr(), PAGE, Access::LOCAL).ctx("get")?);
    }
    check!(cache.len() == 2, "{} entries", cache.len());
    check!(count.load(Ordering::Relaxed) == 1);
    Ok(())
}

fn events_overflow_and_resync() -> TestResult {
    let dev = open()?;
    dev.map_state_words(512).ctx("map_state_words")?;
    let mut events = dev.setup_events(2, None).ctx("setup_events")?;
    let keep = AnonMap::new(PAGE).ctx("mmap")?;
    let kept = dev
        .register_range(keep.addr(), PAGE, Access::LOCAL)
        .ctx("register")?;
    let maps: Vec<AnonMap> = (0..5)
        .map(|_| AnonMap::new(PAGE))
        .collect::<io::Result<_>>()
        .ctx("mmap")?;
    let regs = maps
        .iter()
        .map(|m| dev.register_range(m.addr(), PAGE, Access::LOCAL))
        .collect::<io::Result<Vec<_>>>()
        .ctx("register")?;
    drop(maps);
    check!(events.overflowed());
    check!(events.overflows() >= 3, "overflows {}", events.overflows());
    let read = events.events().count();
    check!(read == 2, "{read} events read");
    let mut list = Vec::new();
    events.resync(&mut list).ctx("resync")?;
    check!(!events.overflowed());
    check!(list.iter().any(|e| e.key == kept.lkey()), "{list:?}");
    for r in &regs {
        check!(list.iter().all(|e| e.key != r.lkey()));
        check!(r.word_state() == Some(WordState::Ended));
    }
    check!(!events.pending());
    Ok(())
}

fn queue_requests() -> TestResult {
    let dev = open()?;
    let q = dev.create_queue(8, 16, None).ctx("create_queue")?;
    // SAFETY: a NOP names no memory.
    let c = unsafe { run(&q, &Request::nop().user_data(1)) }?;
    check!(c.user_data == 1 && c.result().ctx("nop")? == 0, "{c:?}");

    let mut src = vec![0u8; 2 * PAGE];
    for (i, b) in src.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut dst = vec![0xffu8; 2 * PAGE];
    {
        let s = dev.register(&mut src, Access::LOCAL).ctx("register src")?;
        let d = dev.register(&mut dst, Access::LOCAL).ctx("register dst")?;
        let req = Request::copy(
            d.lkey(),
            d.buffer_offset() + 100,
            s.lkey(),
            s.buffer_offset(),
            5000,
        )
        .user_data(2);
        // SAFETY: the COPY writes bytes 100..5100 of `dst`, borrowed by `d`
        // alone, through which nothing reads before `run` has reaped it.
        let c = unsafe { run(&q, &req) }?;
        check!(c.user_data == 2 && c.result().ctx("copy")? == 5000, "{c:?}");
        // SAFETY: a FENCE names no memory.
        let c = unsafe { run(&q, &Request::fence().user_data(3)) }?;
        check!(c.user_data == 3 && c.status == 0, "{c:?}");
    }
    check!(dst[..100].iter().all(|&b| b == 0xff));
    check!(dst[100..5100] == src[..5000]);
    check!(dst[5100..].iter().all(|&b| b == 0xff));

    // DEREGISTER on the ring drops the reference the registration held;
    // the last one parks it, and DEREGISTER of a parked one is EINVAL.
    let map = AnonMap::new(PAGE).ctx("mmap")?;
    let reg = dev
        .register_range(map.addr(), PAGE, Access::LOCAL)
        .ctx("register")?;
    // SAFETY: a DEREGISTER writes no memory.
    let c = unsafe { run(&q, &Request::deregister(reg.lkey()).user_data(4)) }?;
    check!(c.user_data == 4 && c.status == 0, "{c:?}");
    expect_errno(
        reg.deregister(),
        libc::EINVAL,
        "deregister after the ring's",
    )?;

    // Several in flight, reaped by the iterator.
    for i in 0..6 {
        // SAFETY: a NOP names no memory.
        unsafe { q.submit(&Request::nop().user_data(100 + i)) }.ctx("submit")?;
    }
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 6 && start.elapsed() < Duration::from_secs(5) {
        got.extend(q.completions().map(|c| c.user_data));
    }
    check!(got == (100..106).collect::<Vec<_>>(), "{got:?}");

    let mut master = MasterRing::map(&dev).ctx("master ring")?;
    let mut idx = Vec::new();
    master.read(&mut idx);
    check!(idx.contains(&q.index()), "{idx:?}");
    master.arm();
    let stats = dev.queue_stats().ctx("queue_stats")?;
    check!(stats.requests >= 10 && stats.completions >= 10, "{stats:?}");
    Ok(())
}

fn wait_times_out() -> TestResult {
    let dev = open()?;
    let q = dev.create_queue(2, 2, None).ctx("create_queue")?;
    let start = Instant::now();
    let c = q
        .wait_completion(Some(Duration::from_millis(100)))
        .ctx("wait")?;
    let took = start.elapsed();
    check!(c.is_none(), "{c:?}");
    check!(took >= Duration::from_millis(95), "{took:?}");
    check!(took < Duration::from_secs(2), "{took:?}");
    // And a completion wakes it.
    // SAFETY: a NOP names no memory.
    unsafe { q.submit(&Request::nop().user_data(9)) }.ctx("submit")?;
    let c = q.wait_completion(WAIT).ctx("wait")?;
    check!(c.map(|c| c.user_data) == Some(9));
    // SAFETY: a NOP names no memory.
    check!(unsafe { q.try_submit(&Request::nop()) }.is_ok());
    Ok(())
}

fn many_thread_submit() -> TestResult {
    const THREADS: u64 = 4;
    const EACH: u64 = 1000;
    let dev = open()?;
    let q = dev.create_queue(64, 256, None).ctx("create_queue")?;
    let mut seen = HashSet::new();
    let result = std::thread::scope(|s| {
        let posters: Vec<_> = (0..THREADS)
            .map(|t| {
                let q = &q;
                s.spawn(move || -> io::Result<()> {
                    for i in 0..EACH {
                        let nop = Request::nop().user_data(t * EACH + i);
                        // SAFETY: a NOP names no memory.
                        unsafe { q.submit_timeout(&nop, WAIT) }?;
                    }
                    Ok(())
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (seen.len() as u64) < THREADS * EACH && Instant::now() < deadline {
            match q.wait_completion(Some(Duration::from_millis(100))) {
                Ok(Some(c)) => {
                    if c.status != 0 || !seen.insert(c.user_data) {
                        return Err(format!("bad or duplicate completion {c:?}"));
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
        for p in posters {
            p.join()
                .map_err(|_| "a poster panicked".to_string())?
                .ctx("submit")?;
        }
        Ok(())
    });
    result?;
    check!(
        seen.len() as u64 == THREADS * EACH,
        "{} of {}",
        seen.len(),
        THREADS * EACH
    );
    check!(seen.iter().all(|&u| u < THREADS * EACH));
    check!(q.peek_completion().is_none(), "an extra completion");
    Ok(())
}

fn pool_buffers() -> TestResult {
    let dev = open()?;
    let classes = [
        PoolClass::new(256, 1024, 32, 256),
        PoolClass::new(4096, 64, 4, 16),
    ];
    expect_errno(
        dev.create_pool(&classes, Access::LOCAL | Access::REMOTE_WRITE, 5000, 100),
        libc::EINVAL,
        "a pool peers may write",
    )?;
    let pool = dev
        .create_pool(&classes, Access::LOCAL, 5000, 100)
        .ctx("create_pool")?;
    check!(
        pool.classes()[0].chunk_buffers == 256,
        "{:?}",
        pool.classes()
    );
    check!(
        pool.classes()[1].chunk_buffers == 16,
        "{:?}",
        pool.classes()
    );
    let mut b = pool.alloc(1000, Duration::from_secs(2)).ctx("alloc")?;
    check!(
        b.size() == 4096 && b.class() == 1 && b.len() == 4096,
        "{b:?}"
    );
    let (base, len) = pool.mapping();
    check!(b.addr() >= base as u64 && b.addr() + 4096 <= (base + len) as u64);
    b[..5].copy_from_slice(b"hello");
    let mut back = [0u8; 5];
    dev.copy_from_key(b.key(), b.offset(), &mut back)
        .ctx("copy from the buffer")?;
    check!(&back == b"hello");
    // SAFETY: the copy writes bytes 10..15 of `b`'s buffer, which no slice
    // borrows during the call.
    unsafe { dev.copy_to_key(b.key(), b.offset() + 10, b"world") }.ctx("copy to the buffer")?;
    check!(&b[10..15] == b"world");

    let batch = pool
        .alloc_batch(100, 8, Duration::from_secs(2))
        .ctx("alloc_batch")?;
    check!(!batch.is_empty() && batch.len() <= 8);
    let addrs: HashSet<u64> = batch.iter().map(|b| b.addr()).collect();
    check!(addrs.len() == batch.len(), "duplicate buffers");
    check!(batch.iter().all(|b| b.class() == 0 && b.size() == 256));
    let stats = pool.stats().ctx("stats")?;
    check!(stats.len() == 2);
    check!(stats[0].allocated == batch.len() as u64, "{:?}", stats[0]);
    check!(stats[1].allocated == 1, "{:?}", stats[1]);
    pool.free_batch(batch).ctx("free_batch")?;
    b.free().ctx("free")?;
    let stats = pool.stats().ctx("stats")?;
    check!(
        stats[0].allocated == 0 && stats[1].allocated == 0,
        "{stats:?}"
    );
    // Dropping gives back too.
    drop(pool.alloc(64, Duration::from_secs(2)).ctx("alloc")?);
    check!(pool.stats().ctx("stats")?[0].allocated == 0);
    expect_errno(
        pool.alloc(1 << 20, Duration::ZERO),
        libc::EINVAL,
        "alloc too large",
    )?;
    Ok(())
}

fn peers_write_and_read() -> TestResult {
    let a = open()?;
    let b = open()?;
    // Memory peers write is a mapping of the crate's, registered by range.
    let target = AnonMap::new(2 * PAGE).ctx("mmap")?;
    let mut src = b"written by b".to_vec();
    let mut dst = vec![0u8; 12];
    {
        let ta = a
            .register_range(target.addr(), target.len(), Access::ALL)
            .ctx("register at a")?;
        let peer = b.attach_peer(a.as_fd()).ctx("attach")?;
        let s = b.register(&mut src, Access::LOCAL).ctx("register src")?;
        let d = b.register(&mut dst, Access::LOCAL).ctx("register dst")?;
        let q = b.create_queue(4, 4, None).ctx("create_queue")?;
        let write = Request::write(peer, ta.rkey(), 100, s.lkey(), s.buffer_offset(), 12);
        // SAFETY: the WRITE writes only `target`'s bytes, which nothing
        // borrows until after this block.
        let c = unsafe { run(&q, &write) }?;
        check!(c.result().ctx("write")? == 12, "{c:?}");
        let read = Request::read(peer, d.lkey(), d.buffer_offset(), ta.rkey(), 100, 12);
        // SAFETY: the READ writes only `dst`, borrowed by `d` alone, through
        // which nothing reads before `run` has reaped it.
        let c = unsafe { run(&q, &read) }?;
        check!(c.result().ctx("read")? == 12, "{c:?}");
        // A local key is not a remote one.
        let bad = Request::write(peer, ta.lkey(), 0, s.lkey(), 0, 1);
        // SAFETY: it could write only `target`, which nothing borrows.
        let c = unsafe { run(&q, &bad) }?;
        expect_errno(c.result(), libc::ENOENT, "WRITE by local key")?;
        b.detach_peer(peer).ctx("detach")?;
        let detached = Request::write(peer, ta.rkey(), 0, s.lkey(), 0, 1);
        // SAFETY: as above.
        let c = unsafe { run(&q, &detached) }?;
        expect_errno(c.result(), libc::ENOTCONN, "WRITE after detach")?;
    }
    check!(&target[100..112] == b"written by b");
    check!(&dst[..] == b"written by b");
    Ok(())
}

fn peers_send_recv_and_fd_passing() -> TestResult {
    let a = open()?;
    let b = open()?;
    let (sa, sb) = UnixStream::pair().ctx("socketpair")?;
    send_fd(&sa, a.as_fd()).ctx("send_fd")?;
    let grant = recv_fd(&sb).ctx("recv_fd")?;
    let peer = b.attach_peer(grant.as_fd()).ctx("attach")?;
    drop(grant);
    // The RECV's buffer may be written until its completion is reaped: a
    // mapping of the crate's, which an early return unmaps (ending the
    // registration) rather than frees.
    let inbox = AnonMap::new(PAGE).ctx("mmap")?;
    let mut msg = b"message".to_vec();
    {
        let ra = a
            .register_range(inbox.addr(), inbox.len(), Access::LOCAL)
            .ctx("register inbox")?;
        let rb = b.register(&mut msg, Access::LOCAL).ctx("register msg")?;
        let qa = a.create_queue(4, 8, None).ctx("queue a")?;
        let qb = b.create_queue(4, 8, None).ctx("queue b")?;
        qb.connect(peer, qa.index(), 1000).ctx("connect")?;
        expect_errno(
            qb.connect(peer, qa.index(), 1000),
            libc::EISCONN,
            "connect twice",
        )?;
        let recv = Request::recv(ra.lkey(), ra.buffer_offset(), PAGE as u64).user_data(1);
        // SAFETY: the RECV writes only `inbox`, which nothing borrows until
        // its completion is reaped below (or, on an early return, until it
        // is unmapped, which ends the registration first).
        unsafe { qa.submit(&recv) }.ctx("recv")?;
        let send = Request::send_imm(rb.lkey(), rb.buffer_offset(), 7, 0xfeed).user_data(2);
        // SAFETY: a SEND writes only the RECV buffer posted above.
        let c = unsafe { run(&qb, &send) }?;
        check!(c.result().ctx("send")? == 7, "{c:?}");
        let c = qa
            .wait_completion(WAIT)
            .ctx("wait recv")?
            .ok_or("no RECV completion")?;
        check!(c.user_data == 1 && c.result().ctx("recv")? == 7, "{c:?}");
        check!(
            c.flags & raw::MEMREG_CQE_IMM != 0 && c.imm_data == 0xfeed,
            "{c:?}"
        );
        // Revoked: the handle fails from now on.
        a.revoke_peers().ctx("revoke")?;
        let send = Request::send(rb.lkey(), rb.buffer_offset(), 7);
        // SAFETY: a SEND writes only a RECV buffer its receiver posted.
        let c = unsafe { run(&qb, &send) }?;
        expect_errno(c.result(), libc::ECONNRESET, "SEND after revoke")?;
    }
    check!(&inbox[..7] == b"message");
    Ok(())
}

type Test = (&'static str, fn() -> TestResult);

fn main() {
    let tests: &[Test] = &[
        ("version", version),
        ("register_and_copy", register_and_copy),
        ("invalidation_by_munmap", invalidation_by_munmap),
        ("errors_carry_errno", errors_carry_errno),
        ("cache_hit_without_syscall", cache_hit_without_syscall),
        (
            "cache_drops_stale_entry_after_remap",
            cache_drops_stale_entry_after_remap,
        ),
        (
            "cache_invalidate_callback_and_lru",
            cache_invalidate_callback_and_lru,
        ),
        (
            "cache_callback_may_call_the_cache",
            cache_callback_may_call_the_cache,
        ),
        ("events_overflow_and_resync", events_overflow_and_resync),
        ("queue_requests", queue_requests),
        ("wait_times_out", wait_times_out),
        ("many_thread_submit", many_thread_submit),
        ("pool_buffers", pool_buffers),
        ("peers_write_and_read", peers_write_and_read),
        (
            "peers_send_recv_and_fd_passing",
            peers_send_recv_and_fd_passing,
        ),
    ];
    let present = Path::new(memreg::DEVICE_PATH).exists();
    println!("TAP version 13");
    println!("1..{}", tests.len());
    let mut failed = 0;
    for (i, (name, test)) in tests.iter().enumerate() {
        let n = i + 1;
        if !present {
            println!("ok {n} {name} # SKIP no {}", memreg::DEVICE_PATH);
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(Ok(())) => println!("ok {n} {name}"),
            Ok(Err(msg)) => {
                failed += 1;
                println!("# {name}: {msg}");
                println!("not ok {n} {name}");
            }
            Err(_) => {
                failed += 1;
                println!("not ok {n} {name} # panicked");
            }
        }
    }
    println!(
        "# Totals: pass:{} fail:{failed} xfail:0 xpass:0 skip:{} error:0",
        if present { tests.len() - failed } else { 0 },
        if present { 0 } else { tests.len() }
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
