//! The kernel BTF ids the tracing programs attach to (the BTF tracepoint's
//! `btf_trace_inet_sock_set_state` typedef, fexit's `inet_csk_accept` function),
//! handed to aya without parsing the kernel's BTF.
//!
//! aya 0.14 finds an attach target by searching a whole parsed kernel `Btf` for its
//! name (`BtfTracePoint::load`, `FExit::load`): about 30 ms and 20 MB of heap on
//! this kernel, to learn a number (aya-rs/aya#1172). portwatch finds the ids with
//! btf-rs over the mapped BTF (`btf::typedef_id`, `btf::function_id`) and gives aya
//! a BTF that holds exactly those types at exactly those ids, every id before them
//! a placeholder: the only thing aya reads from it is the id of the name it asks
//! for.
use aya::{Btf, BtfError, Endianness};

/// BTF kinds used here (`include/uapi/linux/btf.h`).
const KIND_PTR: u32 = 2;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;

/// A named kernel type and its id in the running kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'n> {
    Typedef { name: &'n str, id: u32 },
    Func { name: &'n str, id: u32 },
}

impl Target<'_> {
    fn id(&self) -> u32 {
        match self {
            Target::Typedef { id, .. } | Target::Func { id, .. } => *id,
        }
    }
}

/// A BTF with `targets` at their ids (each id distinct, non-zero).
pub fn btf_with(targets: &[Target<'_>]) -> Result<Btf, BtfError> {
    Btf::parse(&blob(targets), Endianness::default())
}

/// The raw BTF: header, types, strings.
fn blob(targets: &[Target<'_>]) -> Vec<u8> {
    let last = targets.iter().map(Target::id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(last as usize * 12);
    let word = |types: &mut Vec<u8>, w: u32| types.extend_from_slice(&w.to_ne_bytes());
    for id in 1..=last {
        let (name_off, kind, extra) = match targets.iter().find(|t| t.id() == id) {
            Some(Target::Typedef { name, .. }) => (push_str(&mut strings, name), KIND_TYPEDEF, 0),
            // A global function; its prototype (type 0) is never looked at.
            Some(Target::Func { name, .. }) => (push_str(&mut strings, name), KIND_FUNC, 1),
            // `void *`: the smallest type there is.
            None => (0, KIND_PTR, 0),
        };
        word(&mut types, name_off);
        word(&mut types, (kind << 24) | extra);
        word(&mut types, 0);
    }
    let mut out = Vec::with_capacity(24 + types.len() + strings.len());
    out.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    out.push(1); // version
    out.push(0); // flags
    for w in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

fn push_str(strings: &mut Vec<u8>, name: &str) -> u32 {
    let at = strings.len() as u32;
    strings.extend_from_slice(name.as_bytes());
    strings.push(0);
    at
}

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::*;

    #[test]
    fn aya_finds_each_target_at_its_id() {
        let btf = btf_with(&[
            Target::Typedef {
                name: "btf_trace_inet_sock_set_state",
                id: 38237,
            },
            Target::Func {
                name: "inet_csk_accept",
                id: 91,
            },
        ])
        .unwrap();
        assert_eq!(
            btf.id_by_type_name_kind("btf_trace_inet_sock_set_state", BtfKind::Typedef)
                .unwrap(),
            38237
        );
        assert_eq!(
            btf.id_by_type_name_kind("inet_csk_accept", BtfKind::Func)
                .unwrap(),
            91
        );
        assert!(btf
            .id_by_type_name_kind("tcp_connect", BtfKind::Func)
            .is_err());
    }

    /// The ids are the running kernel's own: the same lookups on its parsed BTF.
    #[test]
    fn the_same_ids_as_the_kernels_btf() {
        let kernel = super::super::btf::load_vmlinux().unwrap();
        let typedef = super::super::btf::typedef_id(&kernel, "btf_trace_inet_sock_set_state")
            .expect("this kernel has the BTF tracepoint");
        let func = super::super::btf::function_id(&kernel, "inet_csk_accept").unwrap();
        let full = Btf::from_sys_fs().unwrap();
        let small = btf_with(&[
            Target::Typedef {
                name: "btf_trace_inet_sock_set_state",
                id: typedef,
            },
            Target::Func {
                name: "inet_csk_accept",
                id: func,
            },
        ])
        .unwrap();
        for (name, kind) in [
            ("btf_trace_inet_sock_set_state", BtfKind::Typedef),
            ("inet_csk_accept", BtfKind::Func),
        ] {
            assert_eq!(
                small.id_by_type_name_kind(name, kind).unwrap(),
                full.id_by_type_name_kind(name, kind).unwrap(),
                "{name}"
            );
        }
    }
}
