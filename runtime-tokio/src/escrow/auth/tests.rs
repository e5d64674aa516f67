use axum::http::HeaderValue;

use super::*;

const SECRET: &[u8] = b"a shared secret of enough length";
const NOW: UnixTime = UnixTime(1_700_000_000_000);

fn authenticator() -> Authenticator {
    Authenticator::new(
        vec![
            ClientEntry {
                id: "public-gateway".into(),
                role: Role::Gateway,
                peer: Some(PeerId([7; 32])),
                secret: None,
            },
            ClientEntry {
                id: "worker-1".into(),
                role: Role::Worker,
                peer: None,
                secret: Some(Zeroizing::new(b"worker one's own secret".to_vec())),
            },
        ],
        Some(Zeroizing::new(SECRET.to_vec())),
        4,
    )
    .unwrap()
}

fn headers(client: &str, secret: &[u8], timestamp: u64, nonce: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    put(CLIENT_ID_HEADER, client.into());
    put(TIMESTAMP_HEADER, timestamp.to_string());
    put(NONCE_HEADER, nonce.into());
    put(
        SIGNATURE_HEADER,
        sign(secret, timestamp, client, nonce, body),
    );
    headers
}

#[test]
fn a_correctly_signed_request_authenticates_with_its_role_and_peer() {
    let auth = authenticator();
    let body = br#"{"relayKey":"00"}"#;
    let who = auth
        .verify(
            &headers("public-gateway", SECRET, NOW.0, "nonce-aaaaaaaaaaaa", body),
            body,
            NOW,
        )
        .unwrap();
    assert_eq!(who.client_id, "public-gateway");
    assert_eq!(who.role, Role::Gateway);
    assert_eq!(who.peer, Some(PeerId([7; 32])));
    assert!(who.require(Action::Unlock).is_ok());
    assert_eq!(
        who.require(Action::Deposit),
        Err(AuthError::NotPermitted {
            role: "gateway",
            action: "deposit"
        })
    );
}

#[test]
fn a_client_with_its_own_secret_is_not_accepted_with_the_shared_one() {
    let auth = authenticator();
    let body = b"{}";
    let shared = headers("worker-1", SECRET, NOW.0, "nonce-bbbbbbbbbbbb", body);
    assert_eq!(
        auth.verify(&shared, body, NOW),
        Err(AuthError::BadSignature)
    );
    let own = headers(
        "worker-1",
        b"worker one's own secret",
        NOW.0,
        "nonce-cccccccccccc",
        body,
    );
    assert_eq!(auth.verify(&own, body, NOW).unwrap().role, Role::Worker);
}

#[test]
fn the_same_nonce_is_refused_the_second_time_but_other_nonces_pass() {
    let auth = authenticator();
    let body = b"{}";
    let first = headers("public-gateway", SECRET, NOW.0, "nonce-dddddddddddd", body);
    assert!(auth.verify(&first, body, NOW).is_ok());
    assert_eq!(auth.verify(&first, body, NOW), Err(AuthError::Replayed));
    let other = headers("public-gateway", SECRET, NOW.0, "nonce-eeeeeeeeeeee", body);
    assert!(auth.verify(&other, body, NOW).is_ok());
}

#[test]
fn a_nonce_is_forgotten_only_after_its_timestamp_left_the_window() {
    let auth = authenticator();
    let body = b"{}";
    let signed = headers("public-gateway", SECRET, NOW.0, "nonce-ffffffffffff", body);
    assert!(auth.verify(&signed, body, NOW).is_ok());
    let window = duration_millis(SIGNATURE_WINDOW);
    // Still inside the window: replay refused.
    let later = UnixTime(NOW.0 + window);
    assert_eq!(auth.verify(&signed, body, later), Err(AuthError::Replayed));
    // Past it, the timestamp itself is stale: the replay cannot succeed either way.
    let much_later = UnixTime(NOW.0 + window + 1);
    assert_eq!(
        auth.verify(&signed, body, much_later),
        Err(AuthError::StaleTimestamp)
    );
}

#[test]
fn a_full_replay_cache_refuses_instead_of_forgetting() {
    let auth = authenticator(); // capacity 4
    let body = b"{}";
    for index in 0..4 {
        let nonce = format!("nonce-full-{index:08}");
        assert!(
            auth.verify(
                &headers("public-gateway", SECRET, NOW.0, &nonce, body),
                body,
                NOW
            )
            .is_ok()
        );
    }
    let refused = auth.verify(
        &headers("public-gateway", SECRET, NOW.0, "nonce-full-overflow", body),
        body,
        NOW,
    );
    assert_eq!(refused, Err(AuthError::ReplayCacheFull));
    assert_eq!(
        AuthError::ReplayCacheFull.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn stale_timestamps_unknown_clients_and_bad_headers_are_refused_in_order() {
    let auth = authenticator();
    let body = b"{}";
    let window = duration_millis(SIGNATURE_WINDOW);
    let stale = headers(
        "public-gateway",
        SECRET,
        NOW.0 - window - 1,
        "nonce-gggggggggggg",
        body,
    );
    assert_eq!(
        auth.verify(&stale, body, NOW),
        Err(AuthError::StaleTimestamp)
    );
    let future = headers(
        "public-gateway",
        SECRET,
        NOW.0 + window + 1,
        "nonce-gggggggggggg",
        body,
    );
    assert_eq!(
        auth.verify(&future, body, NOW),
        Err(AuthError::StaleTimestamp)
    );
    let unknown = headers("stranger", SECRET, NOW.0, "nonce-hhhhhhhhhhhh", body);
    assert_eq!(
        auth.verify(&unknown, body, NOW),
        Err(AuthError::UnknownClient)
    );
    let short_nonce = headers("public-gateway", SECRET, NOW.0, "short", body);
    assert_eq!(
        auth.verify(&short_nonce, body, NOW),
        Err(AuthError::MalformedHeader(NONCE_HEADER))
    );
    let mut missing = headers("public-gateway", SECRET, NOW.0, "nonce-iiiiiiiiiiii", body);
    missing.remove(NONCE_HEADER);
    assert_eq!(
        auth.verify(&missing, body, NOW),
        Err(AuthError::MissingHeader(NONCE_HEADER))
    );
    let mut bad_signature = headers("public-gateway", SECRET, NOW.0, "nonce-jjjjjjjjjjjj", body);
    bad_signature.insert(SIGNATURE_HEADER, HeaderValue::from_static("zz"));
    assert_eq!(
        auth.verify(&bad_signature, body, NOW),
        Err(AuthError::MalformedHeader(SIGNATURE_HEADER))
    );
    let mut bad_time = headers("public-gateway", SECRET, NOW.0, "nonce-kkkkkkkkkkkk", body);
    bad_time.insert(TIMESTAMP_HEADER, HeaderValue::from_static("-5"));
    assert_eq!(
        auth.verify(&bad_time, body, NOW),
        Err(AuthError::MalformedHeader(TIMESTAMP_HEADER))
    );
}

#[test]
fn a_tampered_body_fails_and_leaves_its_nonce_usable() {
    let auth = authenticator();
    let signed_for = br#"{"amount":1}"#;
    let sent = br#"{"amount":2}"#;
    let forged = headers(
        "public-gateway",
        SECRET,
        NOW.0,
        "nonce-llllllllllll",
        signed_for,
    );
    assert_eq!(
        auth.verify(&forged, sent, NOW),
        Err(AuthError::BadSignature)
    );
    // The failed attempt did not burn the nonce for the real client.
    assert!(auth.verify(&forged, signed_for, NOW).is_ok());
}

#[test]
fn a_signature_over_the_canonical_form_verifies_for_a_differently_spaced_body() {
    let auth = authenticator();
    let canonical = br#"{"a":1,"b":2}"#;
    let sent = b"{ \"b\": 2, \"a\": 1 }";
    let signed = headers(
        "public-gateway",
        SECRET,
        NOW.0,
        "nonce-mmmmmmmmmmmm",
        canonical,
    );
    assert!(auth.verify(&signed, sent, NOW).is_ok());
}

#[test]
fn the_allow_list_refuses_bad_ids_duplicates_and_clients_without_secret() {
    let entry = |id: &str, secret: Option<&[u8]>| ClientEntry {
        id: id.into(),
        role: Role::Operator,
        peer: None,
        secret: secret.map(|s| Zeroizing::new(s.to_vec())),
    };
    assert!(Authenticator::new(vec![entry("bad id", Some(b"x"))], None, 10).is_err());
    assert!(
        Authenticator::new(
            vec![entry("ops", Some(b"x")), entry("ops", Some(b"y"))],
            None,
            10
        )
        .is_err()
    );
    assert!(Authenticator::new(vec![entry("ops", None)], None, 10).is_err());
    assert!(
        Authenticator::new(
            vec![entry("ops", None)],
            Some(Zeroizing::new(b"short".to_vec())),
            10
        )
        .is_err()
    );
}

#[test]
fn roles_allow_exactly_their_actions() {
    use Action::*;
    let allowed = |role: Role| {
        [Deposit, Unlock, Renew, Release, Revoke, ListLeases]
            .into_iter()
            .filter(|action| role.may(*action))
            .collect::<Vec<_>>()
    };
    assert_eq!(allowed(Role::Worker), vec![Deposit, Revoke]);
    assert_eq!(
        allowed(Role::Gateway),
        vec![Unlock, Renew, Release, ListLeases]
    );
    assert_eq!(allowed(Role::Operator), vec![Revoke, ListLeases]);
}
