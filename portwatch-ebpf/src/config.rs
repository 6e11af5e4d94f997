//! The load-time configuration: offsets userspace read from the kernel's tracefs
//! format files and BTF, filters and flags. A read-only global, so the verifier
//! sees constants.
//!
//! Fields are read one at a time with a volatile load (`setting!(name)`, or
//! `setting!(offsets.name)` for a kernel offset): copying the whole struct onto the
//! 512-byte BPF stack in every program would cost more than a hundred bytes of it,
//! and a plain read would let the compiler fold in the zeros below instead of the
//! loader's values.
use portwatch_common::{Config, ConfigFlag};

use crate::names::named;

/// Overwritten by the loader; named `names::GLOBAL_CONFIG`.
#[no_mangle]
pub static PORTWATCH_CONFIG: Config = Config::zeroed();
named!(PORTWATCH_CONFIG, GLOBAL_CONFIG);

/// A volatile read, so the loader's value is used, not the initializer's.
#[inline(always)]
pub fn read<T: Copy>(field: &T) -> T {
    // SAFETY: a reference is valid for reads.
    unsafe { core::ptr::read_volatile(field) }
}

/// One field of the load-time configuration, by its path in [`Config`]:
/// `setting!(flags)`, `setting!(offsets.skc_daddr)`.
macro_rules! setting {
    ($($field:ident).+) => {
        $crate::config::read(&$crate::config::PORTWATCH_CONFIG.$($field).+)
    };
}
pub(crate) use setting;

/// Whether `flag` is set in the configuration's flags.
#[inline(always)]
pub fn has(flag: ConfigFlag) -> bool {
    flag.is_set(setting!(flags))
}
