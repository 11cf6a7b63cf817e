//! `suppressd receipt get|verify`: fetch a receipt with its proof, and check a saved one offline.
//!
//! The saved form is the protobuf JSON mapping of `Receipt` (what `grpcurl` prints for `GetReceipt`:
//! camelCase names, bytes in base64, 64-bit integers as strings), so a receipt fetched either way
//! verifies the same.

use crate::cli::args::{ServerArgs, TlsArgs};
use crate::{
    audit::{
        merkle::Hash,
        note::NoteVerifier,
        verify::{ReceiptProof, verify_growth, verify_receipt},
    },
    proto::{self, suppression_client::SuppressionClient},
};
use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptFile {
    pub(crate) receipt_id: String,
    #[serde(default)]
    pub(crate) state: String,
    pub proof: Option<ProofFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofFile {
    #[serde(
        deserialize_with = "u64_or_string",
        serialize_with = "as_string",
        default
    )]
    pub(crate) log_index: u64,
    pub entry: String,
    pub(crate) leaf_hash: String,
    #[serde(default)]
    pub(crate) inclusion_proof: Vec<String>,
    pub(crate) checkpoint: String,
    #[serde(deserialize_with = "u64_or_string", serialize_with = "as_string")]
    pub(crate) tree_size: u64,
}

/// proto3 JSON writes 64-bit integers as strings; accept numbers too.
fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn hash(field: &str, b64: &str) -> anyhow::Result<Hash> {
    B64.decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{field} is not a base64 SHA-256 hash"))
}

impl ReceiptFile {
    pub fn from_proto(r: proto::Receipt) -> ReceiptFile {
        let state = proto::ReceiptState::try_from(r.state)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_default();
        ReceiptFile {
            receipt_id: r.receipt_id,
            state,
            proof: r.proof.map(|p| ProofFile {
                log_index: p.log_index,
                entry: B64.encode(&p.entry),
                leaf_hash: B64.encode(&p.leaf_hash),
                inclusion_proof: p.inclusion_proof.iter().map(|h| B64.encode(h)).collect(),
                checkpoint: p.checkpoint,
                tree_size: p.tree_size,
            }),
        }
    }

    pub(crate) fn proof(&self) -> anyhow::Result<ReceiptProof> {
        let p = self
            .proof
            .as_ref()
            .context("the receipt carries no proof: it was saved before it became DURABLE")?;
        Ok(ReceiptProof {
            receipt_id: self.receipt_id.clone(),
            log_index: p.log_index,
            entry: B64.decode(&p.entry).context("entry is not base64")?,
            leaf_hash: hash("leafHash", &p.leaf_hash)?,
            inclusion_proof: p
                .inclusion_proof
                .iter()
                .map(|h| hash("inclusionProof", h))
                .collect::<anyhow::Result<_>>()?,
            checkpoint: p.checkpoint.clone(),
            tree_size: p.tree_size,
        })
    }
}

/// A keyless client of `server` (the audit log's proofs need no key), over the client crate's
/// connection: plaintext, TLS or mTLS as `tls` says.
pub(crate) async fn connect(
    server: &str,
    tls: &TlsArgs,
) -> anyhow::Result<SuppressionClient<tonic::transport::Channel>> {
    let channel = crate::cli::tls_config(server, tls)?.channel().await?;
    Ok(SuppressionClient::new(channel))
}

/// `suppressd receipt get`: prints the receipt, with its proof once durable, as JSON. Fetched with
/// the client crate (TLS, mTLS, key, deadline, retries), then read as this crate's `Receipt`: the
/// same message of the same `.proto`, so its protobuf encoding is the bridge.
pub async fn get(server: &ServerArgs, receipt_id: &str) -> anyhow::Result<String> {
    use prost::Message;
    let client =
        suppressd_client::Client::connect(crate::cli::client_config_with_files(server)?).await?;
    let receipt = client
        .get_receipt(receipt_id)
        .await
        .map_err(crate::cli::send::refused)?;
    let receipt = proto::Receipt::decode(receipt.encode_to_vec().as_slice())
        .context("decoding the receipt")?;
    Ok(serde_json::to_string_pretty(&ReceiptFile::from_proto(
        receipt,
    ))?)
}

/// `suppressd receipt verify`: checks a saved receipt with the public key alone; with `server`, also
/// that the log it is in has only grown since.
pub async fn verify(
    file: &str,
    public_key: &str,
    server: Option<&str>,
    tls: &TlsArgs,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let saved: ReceiptFile = serde_json::from_str(&text).context("parsing the receipt")?;
    let verifier = NoteVerifier::parse(public_key).context("parsing the public key")?;
    let proof = saved.proof()?;
    let cp = verify_receipt(&proof, &verifier).map_err(|e| anyhow::anyhow!("INVALID: {e}"))?;
    let mut out = format!(
        "OK: receipt {} is entry {} of the log {:?}, in the checkpoint of {} entries signed by the key\n",
        saved.receipt_id, proof.log_index, cp.origin, cp.size
    );
    if let Some(server) = server {
        let mut client = connect(server, tls).await?;
        let latest = client
            .get_checkpoint(proto::GetCheckpointRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
            .into_inner();
        let growth = client
            .get_consistency_proof(proto::GetConsistencyProofRequest {
                old_size: cp.size,
                new_size: latest.tree_size,
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "INVALID: the log cannot prove it extends the receipt's checkpoint: {}",
                    s.message()
                )
            })?
            .into_inner();
        let hashes: Vec<Hash> = growth
            .hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .context("a proof hash is not 32 bytes")
            })
            .collect::<anyhow::Result<_>>()?;
        let new = verify_growth(&cp, &latest.note, &hashes, &verifier)
            .map_err(|e| anyhow::anyhow!("INVALID: {e}"))?;
        out.push_str(&format!(
            "OK: the log now holds {} entries and extends that checkpoint\n",
            new.size
        ));
    }
    if out.is_empty() {
        bail!("nothing verified");
    }
    Ok(out)
}
