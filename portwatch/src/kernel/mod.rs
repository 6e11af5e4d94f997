//! Everything that talks to the kernel: what it allows (`inspect`), which hooks
//! each attach mode uses (`plan`), loading and attaching (`load`), and the
//! kernel's own descriptions it is read from (`btf`, `tracefs`, `sockdiag`,
//! `bpf_sys`, `lsm`).
pub mod bpf_sys;
pub mod btf;
pub mod btf_ids;
pub mod error;
pub mod filter;
pub mod hooks;
pub mod inspect;
pub mod load;
pub mod lsm;
pub mod plan;
pub mod plan_udp;
pub mod ringfill;
pub mod sockdiag;
pub mod store;
pub mod tracefs;
pub mod tracer;
