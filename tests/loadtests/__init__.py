"""Tests of the Locust journeys and the sizing run."""
