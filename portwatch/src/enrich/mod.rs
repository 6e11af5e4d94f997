//! What userspace adds to an event about its process: executable, command line,
//! user, cgroup and container, read from /proc and cgroupfs.
pub mod cgroups;
pub mod procfs;
pub mod procinfo;
