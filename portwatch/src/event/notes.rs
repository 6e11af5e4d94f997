//! What is unusual about an event. Per the seed: servers use well-known and
//! registered ports, clients use dynamic (temporary) ports; events that break this
//! are worth a second look.
use super::{
    classify::EphemeralRange,
    model::{ConnEvent, Note, PortClass, Role},
};

/// The notes for an event, from its role and its ports' classes.
pub fn notes(e: &ConnEvent, range: EphemeralRange) -> Vec<Note> {
    let mut out = Vec::new();
    match e.role {
        Role::Listener => {
            if range.contains(e.local.port) {
                out.push(Note::ListenerInEphemeralRange);
            }
            if e.local.class == PortClass::Dynamic {
                out.push(Note::ListenerOnDynamicPort);
            }
        }
        Role::Server => {
            if e.local.class == PortClass::Dynamic {
                out.push(Note::ServerOnDynamicPort);
            }
        }
        Role::Client => {
            if e.local.class == PortClass::WellKnown && e.local.port != 0 {
                out.push(Note::ClientFromWellKnownPort);
            } else if e.local.port != 0 && !range.contains(e.local.port) {
                out.push(Note::ClientFromFixedPort);
            }
            if e.remote.class == PortClass::Dynamic {
                out.push(Note::ClientToDynamicPort);
            }
        }
    }
    out
}

/// A UDP flow event (`connect`) of a socket known to be a server's: its answer to
/// a new peer (`accept`, role server), noted as such.
pub fn as_udp_reply(e: &mut ConnEvent, range: EphemeralRange) {
    e.kind = super::model::EventKind::Accept;
    e.role = Role::Server;
    e.notes = notes(e, range);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode::tests::with_ports, model::EventKind};

    const R: EphemeralRange = EphemeralRange::LINUX_DEFAULT;

    #[test]
    fn the_seed_examples_are_not_unusual() {
        assert!(notes(&with_ports(EventKind::Listen, Role::Listener, 21, 0), R).is_empty());
        assert!(notes(&with_ports(EventKind::Accept, Role::Server, 80, 49902), R).is_empty());
        assert!(notes(&with_ports(EventKind::Connect, Role::Client, 51031, 80), R).is_empty());
        assert!(notes(&with_ports(EventKind::Connect, Role::Client, 60718, 80), R).is_empty());
    }

    #[test]
    fn breaking_the_seed_rules_is_noted() {
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 40000, 0), R),
            vec![Note::ListenerInEphemeralRange]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 55000, 0), R),
            vec![Note::ListenerInEphemeralRange, Note::ListenerOnDynamicPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Listen, Role::Listener, 62000, 0), R),
            vec![Note::ListenerOnDynamicPort]
        );
        assert_eq!(
            notes(
                &with_ports(EventKind::Accept, Role::Server, 50000, 40000),
                R
            ),
            vec![Note::ServerOnDynamicPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Connect, Role::Client, 22, 80), R),
            vec![Note::ClientFromWellKnownPort]
        );
        assert_eq!(
            notes(&with_ports(EventKind::Close, Role::Client, 2000, 80), R),
            vec![Note::ClientFromFixedPort]
        );
        assert_eq!(
            notes(
                &with_ports(EventKind::Connect, Role::Client, 40000, 55000),
                R
            ),
            vec![Note::ClientToDynamicPort]
        );
    }
}
