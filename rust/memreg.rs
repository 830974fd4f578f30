// SPDX-License-Identifier: GPL-2.0

//! memreg: registered user memory with automatic invalidation.
//!
//! Each open file of `/dev/memreg` is a [`Context`] bound to the address
//! space of the process that opened it. A registration pins user pages, keeps
//! their translation entries, is reused by later registrations it covers, and
//! ends by itself when the memory under it changes. See
//! `Documentation/userspace-api/memreg/`.
//!
//! # Layout
//!
//! Dependencies point one way, from the file down to the overlay:
//!
//! ```text
//! memreg.rs (module, parameters, device)  ioctl.rs (the ioctl table)
//!   file.rs (one open file: creates, routes, tears down)
//!     datapath/ (rings, worker, ops/, connections)  ->  peer.rs (grants)
//!       pool/ (pools, partitions, growth)
//!         cache/ (registrations, parking, state words, events)
//!           events.rs  accounting.rs  stats.rs  error.rs  uapi.rs (the ABI edge)
//!             kernel crate and its overlay (rust/kernel/)
//! ```
//!
//! `scripts/check-layout.py` (run by `make check`) fails on an import cycle
//! between modules and on a file over 800 lines.
//!
//! # Lock order
//!
//! Every lock of the driver, outermost first; each lock's documentation
//! gives its level. A lock may be taken while holding only locks of lower
//! levels.
//!
//! 1. The mutexes, never held together: `DataPath::create` (creating queues,
//!    connecting, detaching, revoking), `DataPath::worker` (a whole run of
//!    the worker, across revalidation's `mmap_lock` and a DEREGISTER's
//!    teardown), `Pools::create` and `Pool::grow_lock` (a pool's growth or
//!    shrink, across `mmap_lock`).
//! 2. The address space's `mmap_lock` (pinning, revalidation's page-table
//!    walk, a pool's inserts and zaps), never taken under a spinlock; then
//!    `Pool::subscription`, a mutex the pool's `mmap` takes under it and
//!    that holds nothing else.
//! 3. `Cache::inner`, which the MMU notifier callback takes: nothing
//!    allocates with `GFP_KERNEL`, sleeps, faults on user memory or takes
//!    `mmap_lock` under it. Writing an event wakes `poll` waiters and signals
//!    the eventfd under it: their wait-queue and eventfd locks nest inside.
//! 4. `Cache::shadow`, which a registration leaves under `Cache::inner`.
//! 5. `Registration::state` (a registration's flags, a watch's frames, its
//!    charges and notifier; the notifier callback takes it alone first, then
//!    again under `Cache::inner`), and the module-wide `PARKED` list
//!    (changed under `Cache::inner`, never held while taking one).
//! 6. Leaves, held across nothing that sleeps or takes another lock:
//!    `DataPath::queues`, `DataPath::peers`, `Pools::list`, `Pool::state`,
//!    the pools' `REGISTRY` (with `Pool::state` inside it), `Queue::send`,
//!    `Queue::recv` (with `Queue::cq` inside it), `Master::lock`.
//!
//! Data moves through a registration's pinned pages under no lock, in a
//! borrow of `Registration::pages` (a counted section with preemption
//! disabled that takes no lock and does not sleep, possibly of two
//! registrations at once). What ends, parks or suspends a registration
//! changes its flags first, then waits for the borrows in progress by
//! spinning, under any of these locks or none; it never waits while holding
//! a borrow.
//!
//! The one exception is reclaim: the shrinker takes a cache's lock after
//! finding its victim on `PARKED` (having dropped `PARKED`) and only tries
//! it, so it never waits on a lock a reclaiming allocation could hold.

use kernel::{
    debugfs,
    fs::File,
    miscdevice::{
        ext::{MiscDevicePoll, PollFileOps},
        MiscDevice, MiscDeviceOptions, MiscDeviceRegistration,
    },
    mm::virt::VmaNew,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    shrinker::Shrinker,
    sync::{atomic::Relaxed, Arc},
};

mod accounting;
mod cache;
mod datapath;
mod error;
mod events;
mod file;
mod ioctl;
mod peer;
mod pool;
mod reclaim;
mod stats;
mod uapi;

use cache::inner::CacheConfig;
use file::Context;
use stats::{GLOBAL_CONTEXTS, GLOBAL_PINNED, GLOBAL_REGISTRATIONS};

module! {
    type: MemregModule,
    name: "memreg",
    authors: ["The memreg developers"],
    description: "Registered user memory with automatic invalidation",
    license: "GPL",
    params: {
        max_pinned_pages: u64 {
            default: 0,
            description: "Pages all contexts together may pin (0: no limit but RLIMIT_MEMLOCK)",
        },
        max_registrations: u64 {
            default: 65536,
            description: "Live registrations one context may hold (REGISTER past it: EDQUOT)",
        },
        max_watches: u64 {
            default: 65536,
            description: "Live watch-only registrations one context may hold (REGISTER past it: EMFILE)",
        },
        max_watches_total: u64 {
            default: 1048576,
            description: "Live watch-only registrations all contexts together may hold (EMFILE)",
        },
        park: u32 {
            default: 1,
            description: "New files park registrations on their last DEREGISTER (1) or end them (0)",
        },
        park_max: u64 {
            default: 1024,
            description: "Parked registrations a new file keeps at most",
        },
        park_max_pages: u64 {
            default: 262144,
            description: "Pages of parked registrations a new file keeps at most",
        },
        park_idle_ms: u64 {
            default: 5000,
            description: "A new file ends its parked registrations after this long idle (0: never)",
        },
    },
}

/// The value of module parameter `$name` (7.2's accessor returns a
/// reference, later kernels' a copy).
macro_rules! param {
    ($name:ident) => {{
        #[cfg(not(CONFIG_MEMREG_COMPAT_7_2))]
        let value = module_parameters::$name.value();
        #[cfg(CONFIG_MEMREG_COMPAT_7_2)]
        let value = *module_parameters::$name.value();
        value
    }};
}

/// The per-context cap on live registrations.
pub(crate) fn max_registrations() -> u64 {
    param!(max_registrations)
}

/// The per-context cap on live watch-only registrations.
pub(crate) fn max_watches() -> u64 {
    param!(max_watches)
}

/// The module-wide cap on live watch-only registrations.
pub(crate) fn max_watches_total() -> u64 {
    param!(max_watches_total)
}

/// The pages all contexts together may pin, 0 for no limit but
/// `RLIMIT_MEMLOCK`.
pub(crate) fn max_pinned_pages() -> u64 {
    param!(max_pinned_pages)
}

/// The cache configuration a new file starts with, from the module
/// parameters (out-of-range values are clamped).
pub(crate) fn default_cache_config() -> CacheConfig {
    CacheConfig {
        parking: param!(park) != 0,
        max_parked: param!(park_max),
        max_parked_pages: param!(park_max_pages),
        idle_ms: param!(park_idle_ms).min(uapi::MAX_IDLE_MS),
    }
}

#[pin_data(PinnedDrop)]
struct MemregModule {
    /// Gives parked registrations and free pool chunks back under memory
    /// pressure, module-wide.
    _shrinker: Shrinker<reclaim::Reclaim>,
    #[pin]
    _miscdev: MiscDeviceRegistration<Context>,
    /// `memreg/stats`: the module's counters and limits.
    _stats: Pin<KBox<debugfs::File<()>>>,
    _debugfs: debugfs::Dir,
}

impl kernel::InPlaceModule for MemregModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let dir = debugfs::Dir::new(c"memreg");
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", (), &|&(), f| stats::show_global(f)),
            GFP_KERNEL,
        );
        let shrinker = Arc::new(reclaim::Reclaim, GFP_KERNEL)
            .map_err(Error::from)
            .and_then(|r| Shrinker::register(c"memreg", r));
        try_pin_init!(Self {
            _shrinker: shrinker?,
            _miscdev <- MiscDeviceRegistration::register_with_poll(MiscDeviceOptions {
                name: c"memreg",
            }),
            _stats: stats?,
            _debugfs: dir,
        })
    }
}

#[pinned_drop]
impl PinnedDrop for MemregModule {
    fn drop(self: Pin<&mut Self>) {
        // Every file is closed before the module can go, and closing a file ends all of its
        // registrations and waits for its deferred work: anything left here is a leak.
        kernel::warn_on!(
            GLOBAL_CONTEXTS.load(Relaxed) != 0
                || GLOBAL_REGISTRATIONS.load(Relaxed) != 0
                || GLOBAL_PINNED.load(Relaxed) != 0
                || stats::GLOBAL_PEERS.load(Relaxed) != 0
                || stats::GLOBAL_CONTEXTS_ALIVE.load(Relaxed) != 0
        );
    }
}

/// The file operations of `/dev/memreg`, at one address: a file handed to
/// PEER_ATTACH is recognised as memreg's by them.
static FILE_OPS: PollFileOps<Context> = PollFileOps::new();

impl MiscDevicePoll for Context {
    fn poll(me: &Context, file: &File, table: kernel::sync::poll::PollTable<'_>) -> u32 {
        me.poll(file, table)
    }

    fn file_ops() -> &'static PollFileOps<Self> {
        &FILE_OPS
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(Context::new()?, GFP_KERNEL_ACCOUNT)?)
    }

    fn mmap(me: &Context, _file: &File, vma: &VmaNew) -> Result {
        me.mmap(vma)
    }

    fn show_fdinfo(me: &Context, m: &SeqFile, _file: &File) {
        let stats = me.cache().stats();
        let config = me.cache().config();
        seq_print!(m, "memreg-park:\t{}\n", u32::from(config.parking));
        seq_print!(m, "memreg-park_max:\t{}\n", config.max_parked);
        seq_print!(m, "memreg-park_max_pages:\t{}\n", config.max_parked_pages);
        seq_print!(m, "memreg-park_idle_ms:\t{}\n", config.idle_ms);
        seq_print!(m, "memreg-peers:\t{}\n", me.data().peer_count());
        me.pools().lines(|p, c, s| {
            seq_print!(
                m,
                "memreg-pool{}-class{}:\tboundary {} allocated {} free {} grows {} shrinks {} \
                 waits {} timeouts {} fallbacks {} leaks_reclaimed {} quarantined {}\n",
                p,
                c,
                s.boundary,
                s.allocated,
                s.free,
                s.grows,
                s.shrinks,
                s.waits,
                s.timeouts,
                s.fallbacks,
                s.leaks_reclaimed,
                s.quarantined
            );
        });
        seq_print!(m, "{}", stats::Shown(&stats));
    }

    fn ioctl(me: &Context, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ioctl::dispatch(me, cmd, arg)
    }
}
