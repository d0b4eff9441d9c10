"""The Kafka backend: every module that imports kafka-python lives here."""
