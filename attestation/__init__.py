"""Remote attestation for qtestbed: keys, DSSE envelopes, evidence, appraisal, receipts and PKI.

A standalone library: it imports nothing from the broker, the drivers or the generated protocol,
so a researcher can verify a result receipt offline with only this package and `cryptography`.
"""
