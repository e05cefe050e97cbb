//! `status-update-manager`: the command-line entry point.
//!
//! Parses the arguments ([`status_update_manager::cli::Cli`]) and runs the command, which
//! sets up its own tracing (to stderr). Exit status: 0 ok, 1 the command failed (`error: …`
//! on stderr), 2 usage error (clap's, or a configuration that does not validate).

use std::process::ExitCode;

use clap::Parser;
use status_update_manager::cli::{error_text, exit_status, Cli};

#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc (built without transparent huge pages), asked for an alignment
/// only when the layout needs more than every block has (8 bytes: blocks
/// come in multiples of a word, from 16-byte aligned pages). The `mimalloc`
/// crate's allocator passes every layout's alignment to `mi_malloc_aligned`,
/// which took nearly twice the instructions of `mi_malloc` here (callgrind:
/// 123 M against 68 M over one bench run, BENCHMARKS.md) and serves any
/// allocation its fast path misses (a new page, a block over 1 KiB) by
/// over-allocating and aligning.
struct Mimalloc;

/// Every block mimalloc returns is aligned to at least this.
const MI_MIN_ALIGN: usize = 8;

// SAFETY: each method forwards to the mimalloc function for the same
// operation, with the same size and pointer; the unaligned functions only
// where `layout.align()` is at most the 8 bytes every mimalloc block is
// aligned to, so the block is aligned as the layout asks.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= MI_MIN_ALIGN {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A configuration error has one line per bad key.
            for line in error_text(&err).lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(exit_status(&err))
        }
    }
}
