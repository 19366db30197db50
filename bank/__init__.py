"""bank: one bank of the consortium, built on ``tokenring``.

The ledger (SQLite), customers and accounts, the client API, the inter-bank API, cross-bank
transfers run while the bank holds the token, and the web terminal.
"""
