//! Shared types of the policy model that every side names the same way: which list an entry
//! belongs to ([`Scope`]) and which layer of policy it comes from ([`Layer`]).

/// Where an entry or rule came from. Precedence, highest first: `Local` (the NOC's CLI) >
/// `Fleet` (signed controller decisions) > `Auto` (this edge's attack detection) > `Central`
/// (the pushed policy). The derived order is the reverse (lowest first), so a sort puts the
/// winner of each run last. Allowlists and infrastructure always win over `Auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Layer {
    Central,
    Auto,
    Fleet,
    Local,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Central, Layer::Auto, Layer::Fleet, Layer::Local];

    pub const fn name(self) -> &'static str {
        match self {
            Layer::Central => "central",
            Layer::Auto => "auto",
            Layer::Fleet => "fleet",
            Layer::Local => "local",
        }
    }

    pub fn from_name(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// The list an entry belongs to: the ISP-wide one or a customer's. In JSON: `"global"` or
/// `{"customer": ID}` (the form the state files and the API have always used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Customer(u32),
}

impl Scope {
    /// `global` or `customer:ID`, as listings and logs print it.
    pub fn label(self) -> ScopeLabel {
        ScopeLabel(self)
    }
}

/// [`Scope`] printed as `global` or `customer:ID`.
pub struct ScopeLabel(Scope);

impl core::fmt::Display for ScopeLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Scope::Global => f.write_str("global"),
            Scope::Customer(c) => write!(f, "customer:{c}"),
        }
    }
}

#[cfg(feature = "serde")]
mod scope_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Scope;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Repr {
        Global,
        #[serde(untagged)]
        Customer {
            customer: u32,
        },
    }

    impl Serialize for Scope {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match *self {
                Scope::Global => Repr::Global,
                Scope::Customer(customer) => Repr::Customer { customer },
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Scope {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
            Ok(match Repr::deserialize(d)? {
                Repr::Global => Scope::Global,
                Repr::Customer { customer } => Scope::Customer(customer),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_order_puts_the_winner_last() {
        let mut v = Layer::ALL;
        v.reverse();
        v.sort();
        assert_eq!(v, [Layer::Central, Layer::Auto, Layer::Fleet, Layer::Local]);
        for l in Layer::ALL {
            assert_eq!(Layer::from_name(l.name()), Some(l));
        }
    }
}
