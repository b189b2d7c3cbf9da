"""The ray replica backend (`trestle serve --backend ray`): the backend the gateway drives
(backend), the actor each replica is (actor), and what a replica asks of Ray (placement)."""
