"""Cross-bank transfers: the protocol (pure), its simulator, and the bank's driver.

- :mod:`bank.transfers.protocol`: values and messages, and their JSON form;
- :mod:`bank.transfers.book`: the durable operations the protocol asks for, and the
  simulator's in-memory book;
- :mod:`bank.transfers.participant` and :mod:`bank.transfers.coordinator`: the two roles, as
  pure state machines over the book;
- :mod:`bank.transfers.simulation`: a seeded simulator of banks, network faults and tokens.
"""
