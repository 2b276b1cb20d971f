"""The monitoring module's host: configuration and plugins found through entry points."""
