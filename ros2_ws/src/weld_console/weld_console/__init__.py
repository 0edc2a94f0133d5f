"""weld_console: the operator console, a web page served from the board by one rclpy node."""
