# value.capnp: the dynamic Value, Bulkhead's lingua franca.
#
# A Value is what a Python actor sends and receives, and what a C++ actor uses
# when it does not want a schema of its own.  It maps one to one onto Python:
#   null -> None, bool -> bool, int -> int (signed 64-bit), float -> float,
#   text -> str, data -> bytes, list -> list, tuple -> tuple,
#   map -> dict (keys are Values, order kept), symbol -> bulkhead.Atom.
# Readers must apply Cap'n Proto's traversal and nesting limits: a Value comes
# from another process and may be hostile.
#
# Protocol rules: fields are never renumbered or removed; new variants get new
# ordinals at the end.

@0xc43fe8311a85a30f;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::schema");

struct Value {
  union {
    null @0 :Void;          # None / nil
    bool @1 :Bool;          # a boolean
    int @2 :Int64;          # a signed 64-bit integer (larger ints are refused by the sender)
    float @3 :Float64;      # an IEEE 754 double
    text @4 :Text;          # UTF-8 text
    data @5 :Data;          # raw bytes
    list @6 :List(Value);   # an ordered, mutable sequence
    tuple @7 :List(Value);  # a fixed, ordered sequence (Erlang tuple, Python tuple)
    map @8 :List(Entry);    # key/value pairs in insertion order; keys are unique
    symbol @9 :Text;        # an atom: an interned name such as `ok` or `error`
  }

  struct Entry {
    key @0 :Value;    # the key (any Value; unique within the map)
    value @1 :Value;  # the value
  }
}
