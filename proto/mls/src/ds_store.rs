//! The delivery service's store of one group's public state, for openmls's `PublicGroup`.
//!
//! Why not openmls's `MemoryStorage`: it panics on a value it cannot decode, and these values
//! come back from the database, which an operator can edit. Here every read that does not
//! decode is an error ([`Corrupt`]), so a damaged row costs a clear refusal, never a node.

use std::collections::BTreeMap;
use std::sync::RwLock;

use openmls_traits::public_storage::PublicStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, Entity, traits};
use serde::Serialize;

/// A stored value did not decode as what openmls asked for.
#[derive(Debug, thiserror::Error)]
#[error("the stored group state is damaged: {0}")]
pub(crate) struct Corrupt(String);

/// One record: what it is, and for whom (the group, and a proposal's reference).
type Slot = (u8, Vec<u8>);

const TREE: u8 = 1;
const TRANSCRIPT: u8 = 2;
const CONTEXT: u8 = 3;
const CONFIRMATION: u8 = 4;
const PROPOSAL: u8 = 5;

/// One group's public records, as JSON values (openmls's serde forms).
#[derive(Debug, Default)]
pub(crate) struct DsStore {
    values: RwLock<BTreeMap<Slot, Vec<u8>>>,
}

fn key(value: &impl Serialize) -> Result<Vec<u8>, Corrupt> {
    serde_json::to_vec(value).map_err(|e| Corrupt(e.to_string()))
}

impl DsStore {
    /// Every record, for storage.
    pub(crate) fn records(&self) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values
            .iter()
            .map(|((kind, k), v)| (*kind, k.clone(), v.clone()))
            .collect()
    }

    /// A store holding `records` (checked when openmls reads them).
    pub(crate) fn from_records(records: Vec<(u8, Vec<u8>, Vec<u8>)>) -> Self {
        let values = records
            .into_iter()
            .map(|(kind, k, v)| ((kind, k), v))
            .collect();
        Self {
            values: RwLock::new(values),
        }
    }

    fn put(&self, kind: u8, k: Vec<u8>, value: &impl Serialize) -> Result<(), Corrupt> {
        let value = serde_json::to_vec(value).map_err(|e| Corrupt(e.to_string()))?;
        self.values
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((kind, k), value);
        Ok(())
    }

    fn get<T: Entity<CURRENT_VERSION>>(&self, kind: u8, k: Vec<u8>) -> Result<Option<T>, Corrupt> {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values
            .get(&(kind, k))
            .map(|bytes| serde_json::from_slice(bytes).map_err(|e| Corrupt(e.to_string())))
            .transpose()
    }

    fn remove(&self, kind: u8, k: Vec<u8>) {
        self.values
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(kind, k));
    }
}

/// A proposal's slot: the group and the reference, length-prefixed.
fn proposal_key(group: &impl Serialize, reference: &impl Serialize) -> Result<Vec<u8>, Corrupt> {
    let group = key(group)?;
    let mut out = (group.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(&group);
    out.extend_from_slice(&key(reference)?);
    Ok(out)
}

impl PublicStorageProvider<CURRENT_VERSION> for DsStore {
    type PublicError = Corrupt;

    fn write_tree<G: traits::GroupId<CURRENT_VERSION>, T: traits::TreeSync<CURRENT_VERSION>>(
        &self,
        group_id: &G,
        tree: &T,
    ) -> Result<(), Corrupt> {
        self.put(TREE, key(group_id)?, tree)
    }

    fn write_interim_transcript_hash<
        G: traits::GroupId<CURRENT_VERSION>,
        H: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
        hash: &H,
    ) -> Result<(), Corrupt> {
        self.put(TRANSCRIPT, key(group_id)?, hash)
    }

    fn write_context<
        G: traits::GroupId<CURRENT_VERSION>,
        C: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
        context: &C,
    ) -> Result<(), Corrupt> {
        self.put(CONTEXT, key(group_id)?, context)
    }

    fn write_confirmation_tag<
        G: traits::GroupId<CURRENT_VERSION>,
        T: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
        tag: &T,
    ) -> Result<(), Corrupt> {
        self.put(CONFIRMATION, key(group_id)?, tag)
    }

    fn queue_proposal<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
        P: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
        reference: &R,
        proposal: &P,
    ) -> Result<(), Corrupt> {
        self.put(
            PROPOSAL,
            proposal_key(group_id, reference)?,
            &(reference, proposal),
        )
    }

    fn queued_proposals<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
        P: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
    ) -> Result<Vec<(R, P)>, Corrupt> {
        let group = key(group_id)?;
        let mut prefix = (group.len() as u64).to_be_bytes().to_vec();
        prefix.extend_from_slice(&group);
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values
            .iter()
            .filter(|((kind, k), _)| *kind == PROPOSAL && k.starts_with(&prefix))
            .map(|(_, bytes)| serde_json::from_slice(bytes).map_err(|e| Corrupt(e.to_string())))
            .collect()
    }

    fn tree<G: traits::GroupId<CURRENT_VERSION>, T: traits::TreeSync<CURRENT_VERSION>>(
        &self,
        group_id: &G,
    ) -> Result<Option<T>, Corrupt> {
        self.get(TREE, key(group_id)?)
    }

    fn group_context<
        G: traits::GroupId<CURRENT_VERSION>,
        C: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
    ) -> Result<Option<C>, Corrupt> {
        self.get(CONTEXT, key(group_id)?)
    }

    fn interim_transcript_hash<
        G: traits::GroupId<CURRENT_VERSION>,
        H: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
    ) -> Result<Option<H>, Corrupt> {
        self.get(TRANSCRIPT, key(group_id)?)
    }

    fn confirmation_tag<
        G: traits::GroupId<CURRENT_VERSION>,
        T: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
    ) -> Result<Option<T>, Corrupt> {
        self.get(CONFIRMATION, key(group_id)?)
    }

    fn delete_tree<G: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &G,
    ) -> Result<(), Corrupt> {
        self.remove(TREE, key(group_id)?);
        Ok(())
    }

    fn delete_confirmation_tag<G: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &G,
    ) -> Result<(), Corrupt> {
        self.remove(CONFIRMATION, key(group_id)?);
        Ok(())
    }

    fn delete_context<G: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &G,
    ) -> Result<(), Corrupt> {
        self.remove(CONTEXT, key(group_id)?);
        Ok(())
    }

    fn delete_interim_transcript_hash<G: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &G,
    ) -> Result<(), Corrupt> {
        self.remove(TRANSCRIPT, key(group_id)?);
        Ok(())
    }

    fn remove_proposal<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
        reference: &R,
    ) -> Result<(), Corrupt> {
        self.remove(PROPOSAL, proposal_key(group_id, reference)?);
        Ok(())
    }

    fn clear_proposal_queue<
        G: traits::GroupId<CURRENT_VERSION>,
        R: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &G,
    ) -> Result<(), Corrupt> {
        let group = key(group_id)?;
        let mut prefix = (group.len() as u64).to_be_bytes().to_vec();
        prefix.extend_from_slice(&group);
        self.values
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(kind, k), _| !(*kind == PROPOSAL && k.starts_with(&prefix)));
        Ok(())
    }
}
