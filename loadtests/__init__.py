"""Locust journeys and the worker-sizing run; they talk to the service over HTTP only."""
