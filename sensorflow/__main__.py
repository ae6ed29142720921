from sensorflow.cli import main

raise SystemExit(main())
