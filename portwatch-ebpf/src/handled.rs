//! Which state changes the BTF state program handled on this CPU, so its twin
//! (attached after it, run after it for every change) can tell the changes the
//! kernel's recursion guard made it skip: a few recent changes per CPU, each taken
//! back by the twin. A change the twin itself missed leaves a stale note that later
//! notes overwrite; nothing else depends on it.
use aya_ebpf::{macros::map, maps::PerCpuArray, programs::BtfTracePointContext};

use crate::names::named;

/// How many notes a CPU keeps: more than state changes nest on one CPU.
pub const NOTES: usize = 8;

/// The notes of one CPU (the `HANDLED` map's value).
#[repr(C)]
pub struct Notes {
    next: u64,
    sk: [u64; NOTES],
    states: [u64; NOTES],
}

/// The notes of each CPU (index 0). Kept beside the code that reads it, not in
/// `maps`: no other module touches it.
#[map]
pub static HANDLED: PerCpuArray<Notes> = PerCpuArray::with_max_entries(1, 0);
named!(HANDLED, MAP_HANDLED);

/// One state change: its socket and its transition.
pub struct Change {
    sk: u64,
    states: u64,
}

impl Change {
    #[inline(always)]
    pub fn of(ctx: &BtfTracePointContext) -> Change {
        let sk: u64 = ctx.arg(0);
        let (old, new): (i32, i32) = (ctx.arg(1), ctx.arg(2));
        Change {
            sk,
            states: ((old as u64) << 32) | new as u32 as u64,
        }
    }
}

/// Note that the main program handled `change`.
#[inline(always)]
pub fn note(change: &Change) {
    let Some(notes) = HANDLED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; migration is disabled while the program runs.
    let notes = unsafe { &mut *notes };
    let slot = (notes.next as usize) % NOTES;
    notes.sk[slot] = change.sk;
    notes.states[slot] = change.states;
    notes.next = notes.next.wrapping_add(1);
}

/// Whether the main program noted `change`; its note is taken back.
#[inline(always)]
pub fn take(change: &Change) -> bool {
    let Some(notes) = HANDLED.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: as in `note`.
    let notes = unsafe { &mut *notes };
    let mut i = 0;
    while i < NOTES {
        if notes.sk[i] == change.sk && notes.states[i] == change.states {
            notes.sk[i] = 0;
            return true;
        }
        i += 1;
    }
    false
}
