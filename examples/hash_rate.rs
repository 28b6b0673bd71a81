//! The direct argon2id hashing rate of N threads (default m=19456 t=2 p=1), for comparing login
//! throughput through the server against hashing alone. Usage: `hash_rate THREADS SECONDS`.
#![allow(clippy::indexing_slicing)] // measurement code, not the service

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera::domain::password::{HashParams, Hasher, Password};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let Ok(hasher) = Hasher::new(HashParams::default()) else {
        return;
    };
    let Ok(password) = Password::normalize("correct horse battery staple") else {
        return;
    };
    let Ok(phc) = hasher.hash(&password) else {
        return;
    };
    let hasher = Arc::new(hasher);
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (hasher, done, count, phc, password) = (
                hasher.clone(),
                done.clone(),
                count.clone(),
                phc.clone(),
                password.clone(),
            );
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    // A login verifies: that is the operation to compare with.
                    hasher.verify(&password, &phc);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.1}");
}
