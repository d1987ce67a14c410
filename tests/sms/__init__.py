"""Tests of the SMS domain."""
