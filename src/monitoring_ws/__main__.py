from monitoring_ws.cli import main

raise SystemExit(main())
