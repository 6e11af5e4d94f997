use super::*;

#[test]
fn value_parsers_say_what_is_wrong_by_variant() {
    assert_eq!(parse_ringbuf_size("4096"), Ok(4096));
    assert_eq!(
        parse_ringbuf_size("5000"),
        Err(ArgError::BadRingbufSize(5000))
    );
    assert_eq!(parse_ringbuf_size("x"), Err(ArgError::NotBytes("x".into())));
    assert_eq!(
        parse_cgroup("a/b"),
        Err(ArgError::NotACgroupPath("a/b".into()))
    );
    assert_eq!(parse_container("ABC"), Ok("abc".into()));
    assert_eq!(
        parse_container("xyz"),
        Err(ArgError::NotAContainerId("xyz".into()))
    );
    assert_eq!(parse_uid("0"), Ok(0));
    assert_eq!(
        parse_uid("no-such-user-here"),
        Err(ArgError::NoSuchUser("no-such-user-here".into()))
    );
}

#[test]
fn defaults() {
    let cli = Cli::try_parse_from(["portwatch"]).unwrap();
    assert_eq!(cli.format, Format::Table);
    assert_eq!(cli.ringbuf_size, RINGBUF_DEFAULT_BYTES);
    assert_eq!(cli.attach, AttachChoice::Auto);
}

#[test]
fn attach_modes() {
    for (arg, want) in [
        ("auto", AttachChoice::Auto),
        ("fentry", AttachChoice::Fentry),
        ("kprobe", AttachChoice::Kprobe),
        ("tracepoint", AttachChoice::Tracepoint),
    ] {
        let cli = Cli::try_parse_from(["portwatch", "--attach", arg]).unwrap();
        assert_eq!(cli.attach, want);
    }
    let err = Cli::try_parse_from(["portwatch", "--attach", "uprobe"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn json_and_ringbuf_size() {
    let cli =
        Cli::try_parse_from(["portwatch", "--format", "json", "--ringbuf-size", "65536"]).unwrap();
    assert_eq!(cli.format, Format::Json);
    assert_eq!(cli.ringbuf_size, 65536);
}

#[test]
fn doctor_subcommand_takes_the_format() {
    let cli = Cli::try_parse_from(["portwatch", "doctor", "--format", "json"]).unwrap();
    assert_eq!(cli.command, Some(Command::Doctor));
    assert_eq!(cli.format, Format::Json);
    assert_eq!(Cli::try_parse_from(["portwatch"]).unwrap().command, None);
}

#[test]
fn filters() {
    let cli = Cli::try_parse_from([
        "portwatch",
        "--pid",
        "7",
        "--pid",
        "8",
        "--uid",
        "root",
        "--uid",
        "1000",
        "--port",
        "80",
        "-6",
        "--comm",
        "nginx",
        "--role",
        "server",
        "--class",
        "well-known",
        "--container",
        "ABCdef",
        "--cgroup",
        "/system.slice",
    ])
    .unwrap();
    let f = cli.filter().unwrap();
    assert_eq!(f.pids, vec![7, 8]);
    assert_eq!(f.uids, vec![0, 1000]);
    assert_eq!(f.ports, vec![80]);
    assert_eq!(f.family, Some(Family::Ipv6));
    assert_eq!(f.comms, vec!["nginx".to_string()]);
    assert_eq!(f.roles, vec![Role::Server]);
    assert_eq!(f.classes, vec![PortClass::WellKnown]);
    assert_eq!(f.containers, vec!["abcdef".to_string()]);
    assert_eq!(f.cgroups, vec!["/system.slice".to_string()]);
    // Filters work after a subcommand too.
    let cli = Cli::try_parse_from(["portwatch", "snapshot", "--port", "22"]).unwrap();
    assert_eq!(cli.filter().unwrap().ports, vec![22]);
}

#[test]
fn too_many_kernel_filter_values_is_a_usage_error() {
    let mut args = vec!["portwatch".to_string()];
    for p in 1..=9 {
        args.extend(["--port".to_string(), p.to_string()]);
    }
    let cli = Cli::try_parse_from(args).unwrap();
    assert_eq!(cli.filter().unwrap_err().exit_code(), 2);
}

#[test]
fn explain_takes_ports() {
    let cli = Cli::try_parse_from(["portwatch", "explain", "80", "51031"]).unwrap();
    assert_eq!(
        cli.command,
        Some(Command::Explain {
            ports: vec![PortSpec::new(80, None), PortSpec::new(51031, None)],
            udp: false,
        })
    );
    let cli =
        Cli::try_parse_from(["portwatch", "explain", "--udp", "53", "22/tcp", "514/UDP"]).unwrap();
    assert_eq!(
        cli.command,
        Some(Command::Explain {
            ports: vec![
                PortSpec::new(53, None),
                PortSpec::new(22, Some(Transport::Tcp)),
                PortSpec::new(514, Some(Transport::Udp)),
            ],
            udp: true,
        })
    );
    assert!(Cli::try_parse_from(["portwatch", "explain"]).is_err());
}

#[test]
fn bad_values_are_usage_errors() {
    for args in [
        &["portwatch", "explain", "70000"][..],
        &["portwatch", "explain", "53/sctp"],
        &["portwatch", "explain", "udp/53"],
        &["portwatch", "--port", "0"],
        &["portwatch", "--port", "http"],
        &["portwatch", "--pid", "-3"],
        &["portwatch", "--uid", "no-such-user-here"],
        &["portwatch", "-4", "-6"],
        &["portwatch", "--role", "peer"],
        &["portwatch", "--class", "private"],
        &["portwatch", "--container", "xyz"],
        &["portwatch", "--cgroup", "relative"],
        &["portwatch", "--color", "sometimes"],
        &["portwatch", "--format", "xml"],
        &["portwatch", "--ringbuf-size", "1000"],
        &["portwatch", "--ringbuf-size", "lots"],
        &["portwatch", "--bogus"],
    ] {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}
