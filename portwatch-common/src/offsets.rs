//! Every kernel offset the kernel side needs, in one list.
//!
//! The eBPF programs cannot know where a tracepoint's fields or a kernel struct's
//! members lie on the running kernel; userspace reads that from tracefs format
//! files and from the kernel's BTF, and hands it over in [`crate::Config::offsets`].
//! The list at the bottom of this file is the only place an offset is declared: it
//! generates the [`KernelOffsets`] struct (one `u32` each), the [`Offset`] enum
//! (one variant each, with [`Offset::source`] saying where userspace finds it and
//! which [`ConfigFlag`] it belongs to), and [`KernelOffsets::set`]/[`KernelOffsets::get`].
//! Adding an offset is one line there plus its use in the eBPF crate
//! (`setting!(offsets.NAME)`).
use crate::{
    names::{TP_CATEGORY_SOCK as SOCK, TP_INET_SOCK_SET_STATE as SET_STATE},
    values::ConfigFlag,
};

/// Where userspace finds an offset on the running kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetSource {
    /// The byte offset of `field` in the tracepoint's record, from
    /// `events/{category}/{tracepoint}/format` in tracefs. Required: without it
    /// nothing can be traced.
    Tracefs {
        category: &'static str,
        tracepoint: &'static str,
        field: &'static str,
    },
    /// The byte offset of member `path` (members separated by dots, through
    /// anonymous structs and unions) from the start of `struct {ty}`, from the
    /// kernel's BTF; it must not be a bitfield. Optional: `feature` is set in
    /// [`crate::Config::flags`] only when every offset naming it was found.
    Btf {
        ty: &'static str,
        path: &'static str,
        feature: ConfigFlag,
    },
}

/// One `OffsetSource` from its short form in the list.
macro_rules! offset_source {
    (tracefs($category:expr, $tracepoint:expr, $field:expr)) => {
        OffsetSource::Tracefs {
            category: $category,
            tracepoint: $tracepoint,
            field: $field,
        }
    };
    (btf($ty:expr, $path:expr) => $feature:ident) => {
        OffsetSource::Btf {
            ty: $ty,
            path: $path,
            feature: ConfigFlag::$feature,
        }
    };
}

/// `name: tracefs(category, tracepoint, field),` or
/// `name: btf(struct, member.path) => Feature,` per offset.
macro_rules! kernel_offsets {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $kind:ident($($arg:expr),*) $(=> $feature:ident)?,
    )*) => {
        /// The kernel offsets, byte offsets into a tracepoint record or a kernel
        /// struct, one `u32` per [`Offset`]. An offset whose feature flag is not set
        /// is 0 and unused.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct KernelOffsets {
            $( $(#[doc = $doc])* pub $name: u32, )*
        }

        /// The name of one kernel offset: a field of [`KernelOffsets`]. Variants
        /// are spelled exactly like their fields, so one name finds every use.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Offset {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Offset {
            /// Every offset, in the order of [`KernelOffsets`]' fields.
            pub const ALL: [Offset; [$(Offset::$name),*].len()] = [$(Offset::$name),*];

            /// The field's name, e.g. `"skc_daddr"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Offset::$name => stringify!($name), )*
                }
            }

            /// Where userspace finds this offset.
            pub const fn source(self) -> OffsetSource {
                match self {
                    $( Offset::$name => offset_source!($kind($($arg),*) $(=> $feature)?), )*
                }
            }
        }

        impl KernelOffsets {
            /// Every offset 0: the eBPF object's initializer, which the loader
            /// overwrites.
            pub const fn zeroed() -> KernelOffsets {
                KernelOffsets { $( $name: 0, )* }
            }

            /// Set one offset.
            pub fn set(&mut self, offset: Offset, value: u32) {
                match offset {
                    $( Offset::$name => self.$name = value, )*
                }
            }

            /// One offset.
            pub const fn get(&self, offset: Offset) -> u32 {
                match offset {
                    $( Offset::$name => self.$name, )*
                }
            }
        }
    };
}

impl Offset {
    /// The feature this offset belongs to; `None` for the required tracefs ones.
    pub const fn feature(self) -> Option<ConfigFlag> {
        match self.source() {
            OffsetSource::Btf { feature, .. } => Some(feature),
            OffsetSource::Tracefs { .. } => None,
        }
    }
}

kernel_offsets! {
    // name              source                                          feature
    /// `sock:inet_sock_set_state` record fields (ports there are host order).
    tp_skaddr:           tracefs(SOCK, SET_STATE, "skaddr"),
    tp_oldstate:         tracefs(SOCK, SET_STATE, "oldstate"),
    tp_newstate:         tracefs(SOCK, SET_STATE, "newstate"),
    tp_sport:            tracefs(SOCK, SET_STATE, "sport"),
    tp_dport:            tracefs(SOCK, SET_STATE, "dport"),
    tp_family:           tracefs(SOCK, SET_STATE, "family"),
    tp_protocol:         tracefs(SOCK, SET_STATE, "protocol"),
    tp_saddr:            tracefs(SOCK, SET_STATE, "saddr"),
    tp_daddr:            tracefs(SOCK, SET_STATE, "daddr"),
    tp_saddr_v6:         tracefs(SOCK, SET_STATE, "saddr_v6"),
    tp_daddr_v6:         tracefs(SOCK, SET_STATE, "daddr_v6"),
    /// The walk from an accepted fd to its sock:
    /// `task->files->fdt->fd[fd]->private_data` (a `struct socket`)`->sk`.
    task_files:          btf("task_struct", "files")                     => FdWalk,
    files_fdt:           btf("files_struct", "fdt")                      => FdWalk,
    fdt_max_fds:         btf("fdtable", "max_fds")                       => FdWalk,
    fdt_fd:              btf("fdtable", "fd")                            => FdWalk,
    file_private_data:   btf("file", "private_data")                     => FdWalk,
    socket_sk:           btf("socket", "sk")                             => FdWalk,
    /// `sock.sk_err`: why a connect failed.
    sk_err:              btf("sock", "sk_err")                           => SkErr,
    /// `sock.sk_protocol`: a bitfield before Linux 5.6 (not found there).
    sk_protocol:         btf("sock", "sk_protocol")                      => SkProtocol,
    /// `sock_common` members, as offsets from the start of `struct sock`.
    skc_daddr:           btf("sock", "__sk_common.skc_daddr")            => SockFields,
    skc_dport:           btf("sock", "__sk_common.skc_dport")            => SockFields,
    skc_cookie:          btf("sock", "__sk_common.skc_cookie")           => SockFields,
    /// `inet_sock` members (a `struct sock` begins every `inet_sock`, so these are
    /// offsets from the sock too): the local port and IPv4 address as the
    /// tracepoint's record takes them. `skc_num` is already 0 when a failed
    /// connect's socket reaches CLOSE; `inet_sport` still holds the port.
    inet_sport:          btf("inet_sock", "inet_sport")                  => SockFields,
    inet_saddr:          btf("inet_sock", "inet_saddr")                  => SockFields,
    skc_family:          btf("sock", "__sk_common.skc_family")           => SockFields,
    skc_state:           btf("sock", "__sk_common.skc_state")            => SockFields,
    skc_v6_daddr:        btf("sock", "__sk_common.skc_v6_daddr")         => SockFields,
    skc_v6_rcv_saddr:    btf("sock", "__sk_common.skc_v6_rcv_saddr")     => SockFields,
    /// The socket's network namespace: `sock_common.skc_net` (a `possible_net_t`,
    /// whose `net` pointer is its only member with network namespaces built in)
    /// and that namespace's inode number.
    sock_net:            btf("sock", "__sk_common.skc_net")              => NetNs,
    net_ns_inum:         btf("net", "ns.inum")                           => NetNs,
    /// The current task's parent, its tgid, and the task's start time
    /// (`start_boottime` since Linux 5.5; `real_start_time` before).
    task_real_parent:    btf("task_struct", "real_parent")               => TaskFields,
    task_tgid:           btf("task_struct", "tgid")                      => TaskFields,
    task_start_boottime: btf("task_struct", "start_boottime")            => TaskFields,
    /// UDP: a sock's socket (`sock.sk_socket`), the inode allocated right after
    /// that socket (`socket_alloc.vfs_inode`, whose first member is the socket) and
    /// its number, which names a UDP socket; and where a sendmsg's destination is
    /// (`msghdr.msg_name`, the kernel's copy).
    sk_socket:           btf("sock", "sk_socket")                        => UdpFields,
    socket_inode:        btf("socket_alloc", "vfs_inode")                => UdpFields,
    inode_ino:           btf("inode", "i_ino")                           => UdpFields,
    msghdr_name:         btf("msghdr", "msg_name")                       => UdpFields,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::mem::size_of;

    use super::*;

    #[test]
    fn one_u32_per_offset_and_no_padding() {
        assert_eq!(size_of::<KernelOffsets>(), Offset::ALL.len() * 4);
        assert_eq!(Offset::ALL.len(), 37);
        assert_eq!(KernelOffsets::zeroed(), KernelOffsets::default());
    }

    #[test]
    fn set_and_get_reach_the_named_field() {
        let mut o = KernelOffsets::zeroed();
        for (i, off) in Offset::ALL.iter().enumerate() {
            o.set(*off, 1000 + i as u32);
        }
        for (i, off) in Offset::ALL.iter().enumerate() {
            assert_eq!(o.get(*off), 1000 + i as u32, "{}", off.name());
        }
        // Field order is declaration order: the repr(C) struct's n-th u32.
        // SAFETY: KernelOffsets is repr(C), made of u32 only.
        let words: &[u32; 31] = unsafe { &*(&o as *const KernelOffsets).cast::<[u32; 31]>() };
        for (i, w) in words.iter().enumerate() {
            assert_eq!(*w, 1000 + i as u32);
        }
        o.set(Offset::skc_daddr, 7);
        assert_eq!(o.skc_daddr, 7);
        assert_eq!(Offset::skc_daddr.name(), "skc_daddr");
    }

    #[test]
    fn tracefs_offsets_are_the_state_tracepoints_and_required() {
        let tracefs = Offset::ALL.iter().filter(|o| o.feature().is_none());
        let mut n = 0;
        for o in tracefs {
            let OffsetSource::Tracefs {
                category,
                tracepoint,
                field,
            } = o.source()
            else {
                panic!("{o:?}");
            };
            assert_eq!((category, tracepoint), ("sock", "inet_sock_set_state"));
            assert_eq!(o.name(), &*["tp_", field].concat());
            n += 1;
        }
        assert_eq!(n, 11);
    }

    /// The struct members and feature groups userspace used before the list existed.
    #[test]
    fn btf_offsets_keep_their_members_and_features() {
        use ConfigFlag::*;
        let expected: &[(Offset, &str, &str, ConfigFlag)] = &[
            (Offset::sock_net, "sock", "__sk_common.skc_net", NetNs),
            (Offset::net_ns_inum, "net", "ns.inum", NetNs),
            (Offset::task_files, "task_struct", "files", FdWalk),
            (Offset::files_fdt, "files_struct", "fdt", FdWalk),
            (Offset::fdt_max_fds, "fdtable", "max_fds", FdWalk),
            (Offset::fdt_fd, "fdtable", "fd", FdWalk),
            (Offset::file_private_data, "file", "private_data", FdWalk),
            (Offset::socket_sk, "socket", "sk", FdWalk),
            (Offset::sk_err, "sock", "sk_err", SkErr),
            (Offset::sk_protocol, "sock", "sk_protocol", SkProtocol),
            (Offset::inet_sport, "inet_sock", "inet_sport", SockFields),
            (Offset::inet_saddr, "inet_sock", "inet_saddr", SockFields),
            (
                Offset::task_real_parent,
                "task_struct",
                "real_parent",
                TaskFields,
            ),
            (Offset::task_tgid, "task_struct", "tgid", TaskFields),
            (
                Offset::task_start_boottime,
                "task_struct",
                "start_boottime",
                TaskFields,
            ),
            (Offset::sk_socket, "sock", "sk_socket", UdpFields),
            (Offset::socket_inode, "socket_alloc", "vfs_inode", UdpFields),
            (Offset::inode_ino, "inode", "i_ino", UdpFields),
            (Offset::msghdr_name, "msghdr", "msg_name", UdpFields),
        ];
        let mut btf = 0;
        for o in Offset::ALL {
            let OffsetSource::Btf { ty, path, feature } = o.source() else {
                continue;
            };
            btf += 1;
            if o.name().starts_with("skc_") {
                assert_eq!(ty, "sock");
                assert_eq!(path, &*["__sk_common.", o.name()].concat());
                assert_eq!(feature, SockFields);
                continue;
            }
            let want = expected
                .iter()
                .find(|e| e.0 == o)
                .unwrap_or_else(|| panic!("{o:?}"));
            assert_eq!((ty, path, feature), (want.1, want.2, want.3), "{o:?}");
        }
        assert_eq!(btf, expected.len() + 7);
    }
}
