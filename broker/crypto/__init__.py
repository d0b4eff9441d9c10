"""Crypto-shredding: data keys per (data subject, retention period), wrapped by a KEK."""
