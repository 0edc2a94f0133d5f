# Included through -DCMAKE_PROJECT_INCLUDE when a ROS package is built against the ros-* wheels
# from PyPI (scripts/setup). The wheels' exported CMake targets carry the include directories of
# the machine they were built on (/opt/python/cp311-cp311/...); at the end of configure this
# rewrites them to the running interpreter's headers and numpy's, passed in by scripts/setup.
# A normal colcon build on a ROS install never includes this file.
if(NOT WELD_PYTHON_INCLUDE OR NOT WELD_NUMPY_INCLUDE)
  message(FATAL_ERROR "pip_ros_targets.cmake needs -DWELD_PYTHON_INCLUDE and -DWELD_NUMPY_INCLUDE")
endif()

function(weld_rewrite_wheel_include_dirs)
  get_property(imported DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS imported)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(rewritten "")
    foreach(dir IN LISTS dirs)
      if(dir MATCHES "^/opt/python/[^/]+/.*numpy")
        list(APPEND rewritten "${WELD_NUMPY_INCLUDE}")
      elseif(dir MATCHES "^/opt/python/[^/]+/include")
        list(APPEND rewritten "${WELD_PYTHON_INCLUDE}")
      else()
        list(APPEND rewritten "${dir}")
      endif()
    endforeach()
    list(REMOVE_DUPLICATES rewritten)
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${rewritten}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL weld_rewrite_wheel_include_dirs)
