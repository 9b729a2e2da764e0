import SwiftUI

/// Camera preview, every person drawn over it, and frame rate and inference time.
struct ContentView: View {
    @StateObject private var camera = CameraModel()

    var body: some View {
        ZStack(alignment: .topLeading) {
            CameraPreview(session: camera.session)
                .ignoresSafeArea()
            GeometryReader { geometry in
                SkeletonOverlay(
                    people: camera.people,
                    frameWidth: camera.frameWidth,
                    frameHeight: camera.frameHeight,
                    size: geometry.size
                )
            }
            .ignoresSafeArea()
            Text(String(format: "%.1f FPS · inference %.1f ms", camera.fps, camera.latencyMs))
                .font(.system(size: 14, design: .monospaced))
                .foregroundColor(.white)
                .padding(8)
                .background(Color.black.opacity(0.5))
                .padding()
            if let message = camera.error {
                Text(message)
                    .foregroundColor(.red)
                    .padding()
            }
        }
        .onAppear { camera.start() }
        .onDisappear { camera.stop() }
    }
}
