"""Patient journeys under a seeded fault schedule, and the money invariants after them."""
