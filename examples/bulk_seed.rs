//! Seeds a Tessera database for the scale benchmark: USERS users sharing one precomputed PHC
//! hash (hashing a million passwords would take hours and measure nothing new) and DENYLIST
//! live denylist rows, in one transaction. Usage: `bulk_seed DB USERS DENYLIST`.
//! The first user is `user0` with password "correct horse battery staple".
#![allow(clippy::indexing_slicing)] // measurement code, not the service

use rusqlite::params;
use tessera::domain::password::{HashParams, Hasher, Password};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: bulk_seed DB USERS DENYLIST")?;
    let users: u64 = args.next().ok_or("USERS")?.parse()?;
    let denylist: u64 = args.next().ok_or("DENYLIST")?.parse()?;
    drop(tessera::store::open_for_serving(
        &tessera::store::DbLocation::parse(&db),
        tessera::store::DEFAULT_DB_TIMEOUT,
        tessera::store::DEFAULT_REPLICA_LEASE,
    )?); // creates and migrates
    let hasher = Hasher::new(HashParams::default())?;
    let phc = hasher.hash(&Password::normalize("correct horse battery staple")?)?;
    let mut conn = rusqlite::Connection::open(&db)?;
    let now = tessera::support::clock::now();
    let tx = conn.transaction()?;
    {
        let mut user = tx.prepare(
            "INSERT INTO users (id, username, username_canonical, full_name,
                 mothers_favorite_search_engine, password_hash, created_at)
             VALUES (?1, ?2, ?2, 'Bench User', 'Searx', ?3, ?4)",
        )?;
        for i in 0..users {
            user.execute(params![format!("id{i:020}"), format!("user{i}"), phc, now])?;
        }
        let mut revoked = tx
            .prepare("INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?1, ?2, ?3)")?;
        for i in 0..denylist {
            let owner = format!("id{:020}", i % users.max(1));
            revoked.execute(params![format!("jti{i:019}"), owner, now + 3600])?;
        }
    }
    tx.commit()?;
    println!("seeded {users} users and {denylist} denylist rows into {db}");
    Ok(())
}
