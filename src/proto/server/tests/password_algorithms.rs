//! RFC 8489's password algorithms and USERHASH (§9.2, §14.4, §14.6,
//! §14.11, §14.12): the offer in a challenge, SHA-256 keys with
//! MESSAGE-INTEGRITY-SHA256 whole or truncated and answered in kind, the
//! bid-down protection, and the RFC 5389 clients that know none of it.

use super::*;
use crate::proto::auth::{encode_algorithms, Features, PasswordAlgorithm};
use crate::proto::stun::Integrity;

const BOTH: [PasswordAlgorithm; 2] = [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];

fn offering(algorithms: &[PasswordAlgorithm], userhash: bool) -> Harness {
    Harness::with(Settings {
        password_algorithms: algorithms.to_vec(),
        userhash,
        ..Settings::default()
    })
}

/// How a test client signs: the key's algorithm, the integrity attribute,
/// what it sends of the offer, and how it names its user.
struct Signer {
    algorithm: PasswordAlgorithm,
    /// MESSAGE-INTEGRITY-SHA256 of this length; `None`: MESSAGE-INTEGRITY.
    sha256_len: Option<usize>,
    /// PASSWORD-ALGORITHMS as echoed, and PASSWORD-ALGORITHM.
    echoed: Option<Vec<u8>>,
    chosen: Option<PasswordAlgorithm>,
    userhash: bool,
}

impl Signer {
    /// A client that read the offer of `BOTH` and picked SHA-256.
    fn sha256() -> Signer {
        Signer {
            algorithm: PasswordAlgorithm::Sha256,
            sha256_len: Some(32),
            echoed: Some(encode_algorithms(&BOTH)),
            chosen: Some(PasswordAlgorithm::Sha256),
            userhash: false,
        }
    }

    /// An RFC 5389 client: MD5, MESSAGE-INTEGRITY, nothing of the offer.
    fn legacy() -> Signer {
        Signer {
            algorithm: PasswordAlgorithm::Md5,
            sha256_len: None,
            echoed: None,
            chosen: None,
            userhash: false,
        }
    }

    fn integrity(&self) -> Integrity {
        let key = self.algorithm.key("alice", REALM, "alice-pw");
        match self.sha256_len {
            Some(len) => Integrity::sha256(&key, len),
            None => Integrity::sha1(&key),
        }
    }

    fn allocate(&self, id: TransactionId, nonce: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, method::ALLOCATE, id);
        w.bytes(attr::REQUESTED_TRANSPORT, &UDP);
        match self.userhash {
            true => w.bytes(attr::USERHASH, &auth::userhash("alice", REALM)),
            false => w.bytes(attr::USERNAME, b"alice"),
        };
        w.bytes(attr::REALM, REALM.as_bytes()).bytes(attr::NONCE, nonce);
        if let Some(list) = &self.echoed {
            w.bytes(attr::PASSWORD_ALGORITHMS, list);
        }
        if let Some(chosen) = self.chosen {
            w.bytes(attr::PASSWORD_ALGORITHM, &[0, chosen.code() as u8, 0, 0]);
        }
        w.finish_signed(&self.integrity(), true);
        buf
    }
}

/// `signer`'s Allocate under `nonce`, and the answer.
fn send(h: &mut Harness, c: ClientAddr, signer: &Signer, nonce: &[u8]) -> Response {
    let id = h.next_id();
    let packet = signer.allocate(id, nonce);
    h.exchange(c, &packet)
}

/// A challenge over TCP, where the offer always fits.
fn tcp_challenge(h: &mut Harness, c: ClientAddr) -> Response {
    let id = h.next_id();
    let response = h.exchange(c, &encode(Class::Request, method::ALLOCATE, id, udp, None));
    response.assert_challenge(401);
    response
}

#[test]
fn a_challenge_offers_the_algorithms_in_a_cookie_nonce_and_md5_alone_offers_nothing() {
    let mut h = offering(&BOTH, false);
    let offer = tcp_challenge(&mut h, tcp_client(1));
    let nonce = offer.attr(attr::NONCE).unwrap();
    assert!(
        nonce.starts_with(b"obMatJos2AAAB"),
        "{:?}",
        String::from_utf8_lossy(nonce)
    );
    assert_eq!(
        offer.attr(attr::PASSWORD_ALGORITHMS),
        Some(&[0, 2, 0, 0, 0, 1, 0, 0][..])
    );
    let mut plain = Harness::new();
    let legacy = tcp_challenge(&mut plain, tcp_client(1));
    assert_eq!(legacy.attr(attr::NONCE).unwrap().len(), auth::NONCE_LEN);
    assert_eq!(legacy.attr(attr::PASSWORD_ALGORITHMS), None);
    // Username anonymity sets bit 1.
    let mut anonymous = offering(&BOTH, true);
    let both = tcp_challenge(&mut anonymous, tcp_client(1));
    assert!(both.attr(attr::NONCE).unwrap().starts_with(b"obMatJos2AAAD"));
}

#[test]
fn over_udp_the_offer_is_made_only_within_twice_the_request() {
    let mut h = offering(&BOTH, false);
    let c = client(1);
    // A bare Allocate with FINGERPRINT (36 bytes): the offer (92 bytes)
    // would be more than twice it, so the challenge is RFC 5389's.
    let small = encode(Class::Request, method::ALLOCATE, h.next_id(), udp, None);
    let answer = h.exchange(c, &small);
    answer.assert_challenge(401);
    assert_eq!(answer.attr(attr::PASSWORD_ALGORITHMS), None);
    assert!(answer.0.len() <= 2 * small.len());
    // With SOFTWARE and LIFETIME, as RFC 8489 clients send, it fits.
    let larger = encode(
        Class::Request,
        method::ALLOCATE,
        h.next_id(),
        udp_and(|w| {
            w.bytes(attr::SOFTWARE, b"rfc8489-client").u32(attr::LIFETIME, 600);
        }),
        None,
    );
    let answer = h.exchange(c, &larger);
    answer.assert_challenge(401);
    assert!(answer.attr(attr::PASSWORD_ALGORITHMS).is_some());
    assert!(
        answer.0.len() <= 2 * larger.len(),
        "{} > 2 × {}",
        answer.0.len(),
        larger.len()
    );
}

#[test]
fn sha256_keys_authenticate_with_message_integrity_sha256_whole_or_truncated_answered_in_kind() {
    for len in [32, 28, 24, 20, 16] {
        let mut h = offering(&BOTH, false);
        let c = tcp_client(1);
        let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
        let signer = Signer {
            sha256_len: Some(len),
            ..Signer::sha256()
        };
        let answer = send(&mut h, c, &signer, &nonce);
        answer.assert_success();
        let msg = answer.msg();
        assert!(
            msg.verify(&signer.integrity()),
            "answered with MESSAGE-INTEGRITY-SHA256 of {len} bytes"
        );
        assert_eq!(msg.integrity_sha256_len(), Some(len));
        assert!(!msg.has(attr::MESSAGE_INTEGRITY), "only the SHA-256 attribute");
        let counted = h.server.snapshot(h.now().mono).counters.authentications;
        assert_eq!(counted, [0, 1], "by algorithm");
    }
}

#[test]
fn a_sha256_key_with_message_integrity_and_an_md5_key_with_the_sha256_attribute_both_work() {
    let mut h = offering(&BOTH, false);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let sha1_over_sha256_key = Signer {
        sha256_len: None,
        ..Signer::sha256()
    };
    send(&mut h, c, &sha1_over_sha256_key, &nonce).assert_success();
    let md5_chosen = Signer {
        algorithm: PasswordAlgorithm::Md5,
        chosen: Some(PasswordAlgorithm::Md5),
        ..Signer::sha256()
    };
    let c2 = tcp_client(2);
    let nonce = tcp_challenge(&mut h, c2).attr(attr::NONCE).unwrap().to_vec();
    let answer = send(&mut h, c2, &md5_chosen, &nonce);
    answer.assert_success();
    assert!(answer.msg().verify(&md5_chosen.integrity()));
}

#[test]
fn a_tampered_algorithm_list_or_a_half_echo_is_a_bad_request() {
    let mut h = offering(&BOTH, false);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let bids: [(&str, Signer); 5] = [
        // A man in the middle struck SHA-256 from the offer: the client
        // echoes what it saw, signed, and picked MD5.
        (
            "bid down to md5",
            Signer {
                algorithm: PasswordAlgorithm::Md5,
                echoed: Some(encode_algorithms(&[PasswordAlgorithm::Md5])),
                chosen: Some(PasswordAlgorithm::Md5),
                ..Signer::sha256()
            },
        ),
        (
            "list reordered",
            Signer {
                echoed: Some(encode_algorithms(&[PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256])),
                ..Signer::sha256()
            },
        ),
        (
            "no choice",
            Signer {
                chosen: None,
                ..Signer::sha256()
            },
        ),
        (
            "no list",
            Signer {
                echoed: None,
                ..Signer::sha256()
            },
        ),
        (
            "a choice not offered",
            Signer {
                echoed: Some(encode_algorithms(&[PasswordAlgorithm::Sha256])),
                ..Signer::sha256()
            },
        ),
    ];
    for (what, signer) in bids {
        send(&mut h, c, &signer, &nonce).assert_code(400);
        assert!(!h.server.has_allocation(&c), "{what}");
    }
    // The real echo still works.
    send(&mut h, c, &Signer::sha256(), &nonce).assert_success();
}

#[test]
fn a_cookie_with_a_feature_struck_is_a_forged_nonce() {
    let mut h = offering(&BOTH, false);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let mut struck = nonce.clone();
    struck[..13].copy_from_slice(&Features::NONE.cookie());
    let answer = send(&mut h, c, &Signer::legacy(), &struck);
    answer.assert_challenge(438);
    // Without the cookie at all, likewise.
    let answer = send(&mut h, c, &Signer::legacy(), &nonce[13..]);
    answer.assert_challenge(438);
}

#[test]
fn rfc5389_clients_are_unchanged_under_an_offer_and_refused_when_sha256_is_required() {
    let mut h = offering(&BOTH, false);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let answer = send(&mut h, c, &Signer::legacy(), &nonce);
    answer.assert_success();
    assert!(
        answer.msg().verify(&Signer::legacy().integrity()),
        "MESSAGE-INTEGRITY, as asked"
    );
    assert_eq!(h.server.snapshot(h.now().mono).counters.authentications, [1, 0]);
    // Under ["sha256"], MD5 is refused like a bad credential, with the
    // offer again; SHA-256 passes.
    let mut h = offering(&[PasswordAlgorithm::Sha256], false);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let answer = send(&mut h, c, &Signer::legacy(), &nonce);
    answer.assert_challenge(401);
    assert!(answer.attr(attr::PASSWORD_ALGORITHMS).is_some());
    let failures = h.server.snapshot(h.now().mono).counters.auth_failures;
    assert_eq!(failures[stats::AuthFailure::Algorithm as usize], 1);
    let required = Signer {
        echoed: Some(encode_algorithms(&[PasswordAlgorithm::Sha256])),
        ..Signer::sha256()
    };
    send(&mut h, c, &required, &nonce).assert_success();
}

#[test]
fn userhash_finds_a_configured_user_when_offered() {
    let mut h = offering(&BOTH, true);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let anonymous = Signer {
        userhash: true,
        ..Signer::sha256()
    };
    send(&mut h, c, &anonymous, &nonce).assert_success();
    // The allocation is alice's: a Refresh naming her works.
    let list = h.server.allocation_summaries(h.now().mono);
    assert_eq!(list[0].username, "alice");
    // Not offered: nobody is found by hash.
    let mut h = offering(&BOTH, false);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    send(&mut h, c, &anonymous, &nonce).assert_challenge(401);
}

#[test]
fn a_user_without_a_key_of_the_algorithm_is_unknown_to_it() {
    // Carol has only her precomputed MD5 key.
    let mut h = offering(&BOTH, false);
    let c = tcp_client(1);
    let nonce = tcp_challenge(&mut h, c).attr(attr::NONCE).unwrap().to_vec();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::ALLOCATE, h.next_id());
    w.bytes(attr::REQUESTED_TRANSPORT, &UDP)
        .bytes(attr::USERNAME, b"carol")
        .bytes(attr::REALM, REALM.as_bytes())
        .bytes(attr::NONCE, &nonce)
        .bytes(attr::PASSWORD_ALGORITHMS, &encode_algorithms(&BOTH))
        .bytes(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
    w.finish_signed(
        &Integrity::sha256(&auth::sha256_key("carol", REALM, "carol-pw"), 32),
        true,
    );
    h.exchange(c, &buf).assert_challenge(401);
    let failures = h.server.snapshot(h.now().mono).counters.auth_failures;
    assert_eq!(failures[stats::AuthFailure::UnknownUser as usize], 1);
}
