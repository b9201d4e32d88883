//! Field encryption cost: seal + open of a 2 KB field (AES-256-GCM, fresh nonce, AAD,
//! base64, `nf1:` framing) and a blind index, against a plain copy of the same field
//! measured in the same run. Run: `cargo bench --bench crypto`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use nestflux::crypto::{Aad, KeyRing};

const ITERS: u32 = 20_000;
const ROUNDS: usize = 7;

fn main() {
    let ring = KeyRing::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("ring");
    let field: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(2048)
        .collect();
    let aad = Aad {
        resource: "notes",
        field: "secret",
        id: "0190b1d4-7c3e-7b4a-9d1e-2f0a6b3c4d5e",
    };

    let copy = median_ns(|| {
        let c: Vec<u8> = black_box(field.as_bytes()).to_vec();
        black_box(&c);
    });
    let seal_open = median_ns(|| {
        let sealed = ring.seal(black_box(&aad), black_box(&field)).expect("seal");
        let plain = ring.open(&aad, &sealed).expect("open");
        black_box(plain.len());
    });
    let seal = median_ns(|| {
        black_box(ring.seal(black_box(&aad), black_box(&field)).expect("seal"));
    });
    let sealed = ring.seal(&aad, &field).expect("seal");
    let open = median_ns(|| {
        black_box(
            ring.open(black_box(&aad), black_box(&sealed))
                .expect("open"),
        );
    });
    let short = "someone@example.com";
    let index = median_ns(|| {
        black_box(ring.blind_index("notes", "email", black_box(short)));
    });

    println!("field encryption, 2048-byte field, median of {ROUNDS} rounds x {ITERS} ops");
    println!("{:<34} {:>10} {:>12}", "operation", "ns/op", "x baseline");
    for (name, ns) in [
        ("plain copy (baseline)", copy),
        ("seal + open (encrypt + decrypt)", seal_open),
        ("seal only", seal),
        ("open only", open),
        ("blind index (HMAC, 19-byte value)", index),
    ] {
        println!("{name:<34} {ns:>10.0} {:>12.1}", ns / copy);
    }
    println!(
        "throughput seal+open: {:.0} MB/s of plaintext",
        2048.0 / seal_open * 1e3
    );
}

/// Median over rounds of the mean ns per call.
fn median_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..ITERS / 10 {
        f();
    }
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ITERS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(ITERS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}
