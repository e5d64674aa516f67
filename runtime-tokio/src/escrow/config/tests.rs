use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn minimal_args() -> ServeArgs {
    ServeArgs {
        no_tls: true,
        clients: vec!["public-gateway=gateway".into()],
        ..ServeArgs::default()
    }
}

#[test]
fn defaults_are_the_originals() {
    let env = env_of(&[("ESCROW_SHARED_SECRET", "0123456789abcdef")]);
    let config = resolve(&minimal_args(), &env).unwrap();
    assert_eq!(config.listen, "0.0.0.0:4795".parse().unwrap());
    assert_eq!(config.base_path, "/api/escrow");
    assert_eq!(
        config.keypair_path,
        PathBuf::from("escrow-data/keypair.json")
    );
    assert_eq!(config.audit_dir, PathBuf::from("escrow-data/audit"));
    assert_eq!(config.metrics_path.as_deref(), Some("/metrics"));
    assert_eq!(config.policy, PolicyConfig::default());
    assert!(
        matches!(config.store, StoreChoice::Embedded { ref dir } if dir == Path::new("escrow-data/store"))
    );
    assert_eq!(
        config.shared_secret.as_deref().map(Vec::as_slice),
        Some(&b"0123456789abcdef"[..])
    );
    assert!(config.tls.is_none());
}

#[test]
fn flags_win_over_hypergate_variables_which_win_over_the_originals() {
    let env = env_of(&[
        ("HYPERGATE_ESCROW_PORT", "5000"),
        ("ESCROW_PORT", "6000"),
        ("ESCROW_HOST", "127.0.0.1"),
        ("ESCROW_BASE_PATH", "/escrow/"),
        ("ESCROW_LEASE_TTL_MS", "1000"),
        ("HYPERGATE_ESCROW_LEASE_TTL_MS", "2000"),
        ("ESCROW_REQUIRE_FLAG", "false"),
        ("ESCROW_MAX_UNLOCKS_PER_LEASE", "3"),
        ("ESCROW_METRICS_PATH", "/prom"),
    ]);
    let mut args = minimal_args();
    args.lease_ttl_ms = Some("3000".into());
    let config = resolve(&args, &env).unwrap();
    assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(config.base_path, "/escrow");
    assert_eq!(config.policy.lease_ttl, Duration::from_millis(3000));
    assert!(!config.policy.require_registration_flag);
    assert_eq!(config.policy.max_unlocks_per_lease, 3);
    assert_eq!(config.metrics_path.as_deref(), Some("/prom"));
}

#[test]
fn tls_is_required_unless_explicitly_disabled_and_reads_the_original_names() {
    let mut args = minimal_args();
    args.no_tls = false;
    let missing = resolve(&args, &env_of(&[]));
    assert!(matches!(missing, Err(ConfigError::Missing(_))));
    let env = env_of(&[
        ("ESCROW_TLS_SERVER_CERT", "/tls/cert.pem"),
        ("ESCROW_TLS_SERVER_KEY", "/tls/key.pem"),
        ("ESCROW_TLS_CA", "/tls/ca.pem"),
    ]);
    let config = resolve(&args, &env).unwrap();
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            cert: "/tls/cert.pem".into(),
            key: "/tls/key.pem".into(),
            ca: "/tls/ca.pem".into(),
        })
    );
    let disabled = resolve(&args, &env_of(&[("ESCROW_TLS_ENABLED", "false")])).unwrap();
    assert!(disabled.tls.is_none());
}

#[test]
fn a_database_url_selects_postgres_unless_disabled() {
    let env = env_of(&[
        (
            "ESCROW_DATABASE_URL",
            "postgres://gateway:pw@127.0.0.1:5432/gateway_escrow",
        ),
        ("ESCROW_DB_POOL_SIZE", "9"),
    ]);
    let config = resolve(&minimal_args(), &env).unwrap();
    let StoreChoice::Postgres { settings, migrate } = &config.store else {
        panic!("postgres expected");
    };
    assert_eq!(settings.pool_size, 9);
    assert!(migrate, "migrations run at start by default");
    let off = env_of(&[
        ("ESCROW_DATABASE_URL", "postgres://gateway@127.0.0.1/db"),
        ("ESCROW_DB_ENABLED", "false"),
    ]);
    assert!(matches!(
        resolve(&minimal_args(), &off).unwrap().store,
        StoreChoice::Embedded { .. }
    ));
}

#[test]
fn bad_values_name_their_source_and_never_echo_a_database_password() {
    let error = resolve(&minimal_args(), &env_of(&[("ESCROW_PORT", "http")]))
        .err()
        .unwrap();
    assert!(error.to_string().starts_with("ESCROW_PORT:"), "{error}");
    let mut args = minimal_args();
    args.database_url = Some("postgres://user:hunter2@[::1:5432/db".into());
    let error = resolve(&args, &env_of(&[])).err().unwrap().to_string();
    assert!(!error.contains("hunter2"), "{error}");
    let error = resolve(&minimal_args(), &env_of(&[("ESCROW_BASE_PATH", "api")]))
        .err()
        .unwrap();
    assert!(error.to_string().contains("ESCROW_BASE_PATH"), "{error}");
}

#[test]
fn clients_come_from_flags_or_the_comma_separated_variable() {
    let parsed = parse_client_spec(&format!("gw-1=gateway:{}", "ab".repeat(32))).unwrap();
    assert_eq!(parsed.role, Role::Gateway);
    assert_eq!(parsed.peer, Some(PeerId([0xab; 32])));
    assert!(parse_client_spec("gw=admin").is_err());
    assert!(parse_client_spec("gw").is_err());
    assert!(parse_client_spec("g w=worker").is_err());
    assert!(parse_client_spec("gw=gateway:xyz").is_err());

    let mut args = minimal_args();
    args.clients.clear();
    let none = resolve(&args, &env_of(&[]));
    assert!(matches!(none, Err(ConfigError::Missing(_))));
    let env = env_of(&[("HYPERGATE_ESCROW_CLIENTS", "w1=worker, ops=operator")]);
    let config = resolve(&args, &env).unwrap();
    let ids: Vec<&str> = config.clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["w1", "ops"]);
}

#[test]
fn the_clients_file_must_be_private_and_may_carry_own_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    std::fs::write(
        &path,
        br#"{"clients":[{"id":"gw","role":"gateway","secret":"gateway-own-secret"}]}"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = minimal_args();
    args.clients.clear();
    args.clients_file = Some(path.clone());
    let refused = resolve(&args, &env_of(&[])).err().unwrap();
    assert!(refused.to_string().contains("chmod 600"), "{refused}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = resolve(&args, &env_of(&[])).unwrap();
    assert_eq!(config.clients.len(), 1);
    assert_eq!(
        config.clients[0].secret.as_deref().map(Vec::as_slice),
        Some(&b"gateway-own-secret"[..])
    );
    // Secrets never show in Debug output.
    assert!(!format!("{config:?}").contains("gateway-own-secret"));
}
