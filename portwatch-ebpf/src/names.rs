//! The programs, maps and global here must carry the names userspace looks them up
//! by (`portwatch_common::names`). aya names each after its Rust item, and that
//! name cannot come from a constant, so `named!` next to each item fails the build
//! when the item's name and its constant differ.

/// Whether two strings are equal, usable in a `const`.
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `named!(item, CONSTANT)`: a compile-time error unless `item` exists and is
/// spelled exactly like `portwatch_common::names::CONSTANT`.
macro_rules! named {
    ($item:ident, $constant:ident) => {
        const _: () = {
            let _ = &$item;
            assert!(
                $crate::names::same(stringify!($item), portwatch_common::names::$constant),
                concat!(
                    "`",
                    stringify!($item),
                    "` must be named like portwatch_common::names::",
                    stringify!($constant)
                )
            );
        };
    };
}
pub(crate) use named;
