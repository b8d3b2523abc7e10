//! What the host's write path does against a stamp database the mover guards:
//! [`set_write_token`] in every write transaction, and [`fence_rejection`] to tell a fenced
//! write (refresh the route and retry) from any other failure.

use tokio_postgres::GenericClient;

use crate::migration::fence::{FenceRejection, FenceToken};
use crate::model::{Epoch, StampId};

/// The SQLSTATEs the fence trigger raises: `SF409` stale epoch, `SF410` the stamp gave the
/// tenant up, `SF421` written to the wrong stamp (the three [`fence_rejection`] maps),
/// `SF428` a fenced tenant written without an epoch, `SF400` a row moved between tenants
/// (host bugs, not to be retried).
///
/// ```
/// assert!(stamps::migration::postgres::FENCE_SQLSTATES.contains(&"SF409"));
/// ```
pub const FENCE_SQLSTATES: [&str; 5] = ["SF409", "SF410", "SF421", "SF428", "SF400"];

/// Tells the fence trigger which route the write follows: the epoch of the assignment the
/// writer routed by and the stamp addressed, as settings local to the current transaction
/// (`set_config(…, true)`). Call it in **every** transaction that writes the declared
/// tables, once per stamp of the route, before the first write; outside a transaction it
/// has no effect. A tenant the mover never fenced is written as before; a fenced one is
/// refused without it (`SF428`).
///
/// ```no_run
/// use stamps::migration::postgres::{fence_rejection, set_write_token};
/// use stamps::migration::FenceToken;
/// # async fn write(client: &mut tokio_postgres::Client, route: &stamps::Assignment) -> Result<(), Box<dyn std::error::Error>> {
/// use stamps::Clock;
/// for token in FenceToken::for_write(route, stamps::SystemClock.now()) {
///     // (each token's stamp has its own connection in a real host)
///     let tx = client.transaction().await?;
///     set_write_token(&tx, &token).await?;
///     let written = tx
///         .execute("INSERT INTO kv (tenant, k, v) VALUES ($1, $2, $3) ON CONFLICT (tenant, k) DO UPDATE SET v = EXCLUDED.v",
///             &[&token.tenant.as_str(), &"greeting", &"hello"])
///         .await;
///     match written {
///         Err(e) if fence_rejection(&e).is_some() => return Err("fenced: refresh the route and retry".into()),
///         other => { other?; }
///     }
///     tx.commit().await?;
/// }
/// # Ok(()) }
/// ```
pub async fn set_write_token(client: &impl GenericClient, token: &FenceToken) -> Result<(), tokio_postgres::Error> {
    let (epoch, stamp) = (token.epoch.0.to_string(), token.stamp.0.to_string());
    client
        .execute(
            "SELECT set_config('stamps.epoch', $1, true), set_config('stamps.stamp', $2, true)",
            &[&epoch, &stamp],
        )
        .await
        .map(|_| ())
}

/// The fence's refusal carried by a write's error, if the trigger refused it: stale epoch,
/// tenant given up, or wrong stamp. `None` for any other error (including `SF428`, a write
/// without [`set_write_token`], which is a bug of the host and not to be retried).
///
/// ```no_run
/// # fn f(e: tokio_postgres::Error) {
/// if let Some(refusal) = stamps::migration::postgres::fence_rejection(&e) {
///     eprintln!("{refusal}"); // refresh the route and retry
/// }
/// # }
/// ```
pub fn fence_rejection(error: &tokio_postgres::Error) -> Option<FenceRejection> {
    let db = error.as_db_error()?;
    let detail = db.detail()?;
    let parts: Vec<&str> = detail.split(':').collect();
    let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
    match (db.code().code(), parts.first().copied()) {
        ("SF409", Some("stale")) => Some(FenceRejection::Stale {
            token: Epoch(num(1)?),
            current: Epoch(num(2)?),
        }),
        ("SF410", Some("not_held")) => Some(FenceRejection::NotHeld { since: Epoch(num(1)?) }),
        ("SF421", Some("wrong_stamp")) => Some(FenceRejection::WrongStamp {
            this: StampId(u32::try_from(num(1)?).ok()?),
            token: StampId(u32::try_from(num(2)?).ok()?),
        }),
        _ => None,
    }
}
