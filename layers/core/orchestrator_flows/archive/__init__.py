"""Call records that outlive Redis: the DynamoDB archive (`store`), its hash chain (`chain`),
the index of calls due to be archived (`index`) and the sweeper that archives them (`sweeper`).

Nothing is imported here: a function that only schedules calls (every turn) must not pay for
botocore at its cold start."""
