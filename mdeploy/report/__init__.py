"""Build records for people and machines: manifest.json (and, later, report.json/html)."""
