//! The `relay_settings!` macro: from one list of the relay's settings it makes the config file
//! schema ([`RelayConfig`](super::RelayConfig)) with its defaults and, with the `clap` feature,
//! the command-line flags ([`RelayFlags`](super::RelayFlags)) and their merge over the file.

/// Each entry is one setting:
///
/// ```text
/// /// What the key means in the config file.
/// #[serde(...)]                     // optional, on the file's field
/// field: Type = default,            // the key in relay.toml (kebab-case) and its default
/// flag                              // optional: the flag and its environment variable
///     /// The --help text (coturn's name in [brackets]).
///     #[arg(long, env = "XDPTURN_...", ...)]
///     flag_field: FlagType,         // Vec<T> for a list, Option<T> for one value
/// ;
/// ```
///
/// The flag's value goes over the file's through [`Overlay`](super::flags::Overlay), chosen by
/// the two types: a list replaces the file's list when not empty, a value replaces the file's
/// when given.
macro_rules! relay_settings {
    ($(
        $(#[$attr:meta])*
        $field:ident: $ty:ty = $default:expr
        $(, flag $(#[$flag_attr:meta])* $flag:ident: $flag_ty:ty)?
        ;
    )*) => {
        /// The relay's configuration file (`relay.toml`); the operator renders it.
        ///
        /// Every field has a default, so an empty file (or none at all) is a working
        /// configuration: a STUN/TURN server on port 3478, UDP and TCP, all interfaces, IPv4 and
        /// IPv6.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct RelayConfig {
            $(
                $(#[$attr])*
                pub $field: $ty,
            )*
        }

        impl Default for RelayConfig {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                }
            }
        }

        /// The relay's settings as flags and environment variables (`XDPTURN_*`): each one
        /// absent unless given, so that [`RelayFlags::apply`] lays only what was given over the
        /// config file.
        #[cfg(feature = "clap")]
        #[derive(Debug, Clone, Default, clap::Args)]
        // --help lists the flags in this order, numbered from 100 whatever comes before them in
        // the relay's command, so that an entry can take another's place (`display_order`).
        #[command(next_display_order = 100)]
        pub struct RelayFlags {
            $($(
                $(#[$flag_attr])*
                pub $flag: $flag_ty,
            )?)*
        }

        #[cfg(feature = "clap")]
        impl RelayFlags {
            /// Lays the given flags and variables over `cfg` (the file's settings, or the
            /// defaults): each replaces the file's value. Everything is applied; the first
            /// value that does not parse is returned, named as its config file key.
            pub fn apply(&self, cfg: &mut RelayConfig) -> Result<(), flags::FlagError> {
                let mut first_error = None;
                $($(
                    if let Err(message) = flags::Overlay::overlay(&mut cfg.$field, &self.$flag) {
                        first_error.get_or_insert(flags::FlagError::new(
                            stringify!($field),
                            message,
                        ));
                    }
                )?)*
                self.apply_pairs(cfg);
                first_error.map_or(Ok(()), Err)
            }
        }
    };
}
