/// Why a message, credential or commit is refused. Node and clients refuse with the same
/// reasons; the node maps them to wire error codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes are not a well-formed MLS message of the kind expected.
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// The message belongs to another group.
    #[error("the message is for another group")]
    WrongGroup,
    /// The message names an epoch other than the group's current one.
    #[error("the message is for epoch {got}, the group is at epoch {current}")]
    WrongEpoch {
        /// The group's epoch.
        current: u64,
        /// The message's.
        got: u64,
    },
    /// openmls refused it against the group's state (signature, membership, tree, …).
    #[error("invalid for the group's state: {0}")]
    Invalid(String),
    /// A device credential does not verify, or names another user or device.
    #[error("device credential refused: {0}")]
    Credential(String),
    /// The group's policy forbids it.
    #[error("{0}")]
    Policy(String),
    /// The sender is not who the message says, or not a member.
    #[error("not a member: {0}")]
    NotMember(String),
}

impl Refusal {
    pub(crate) fn invalid(e: impl std::fmt::Debug) -> Self {
        let mut text = format!("{e:?}");
        text.truncate(200);
        Self::Invalid(text)
    }

    pub(crate) fn malformed(e: impl std::fmt::Debug) -> Self {
        let mut text = format!("{e:?}");
        text.truncate(200);
        Self::Malformed(text)
    }
}
