import SwiftUI

/// Draws every person's skeleton over the preview (which fills the view, cropping the frame),
/// one colour per person; when the keypoints carry depth (a 3-D model), each joint and bone is
/// coloured by its depth instead: warm is near, cool is far, over the person's own range.
struct SkeletonOverlay: View {
    let people: [Pose]
    let frameWidth: Int
    let frameHeight: Int
    let size: CGSize

    /// Bone colours, one per person in the order the model lists them (the first: green).
    static let personColors: [Color] = [.green, .cyan, .pink, .red, .blue, .white]

    /// Hue of the nearest and the farthest depth (0...1 of the colour wheel): red (warm, near)
    /// through yellow and green to blue (cool, far).
    static let nearHue = 0.0
    static let farHue = 240.0 / 360.0

    /// A depth share (0 nearest ... 1 farthest, Pose.depthShare) as a colour; `fallback` when it is unknown (NaN).
    static func depthColor(_ share: Float, fallback: Color) -> Color {
        if share.isNaN {
            return fallback
        }
        return Color(hue: nearHue + (farHue - nearHue) * Double(share), saturation: 1, brightness: 1)
    }

    var body: some View {
        Canvas { context, _ in
            for (i, pose) in people.enumerated() {
                let shown = ViewMapping.toView(
                    pose,
                    frameWidth: frameWidth,
                    frameHeight: frameHeight,
                    viewWidth: Float(size.width),
                    viewHeight: Float(size.height),
                    fill: true
                )
                let color = Self.personColors[i % Self.personColors.count]
                let byDepth = shown.hasDepth
                for (a, b) in shown.bones() {
                    var line = Path()
                    line.move(to: CGPoint(x: CGFloat(a.x), y: CGFloat(a.y)))
                    line.addLine(to: CGPoint(x: CGFloat(b.x), y: CGFloat(b.y)))
                    let boneColor = byDepth ? Self.depthColor(shown.depthShare((a.depthMm + b.depthMm) / 2), fallback: color) : color
                    context.stroke(line, with: .color(boneColor), lineWidth: 4)
                }
                for k in shown.keypoints where k.score >= PoseModelConfig.scoreThreshold {
                    let dot = CGRect(x: CGFloat(k.x) - 5, y: CGFloat(k.y) - 5, width: 10, height: 10)
                    let jointColor = byDepth ? Self.depthColor(shown.depthShare(k.depthMm), fallback: color) : .yellow
                    context.fill(Path(ellipseIn: dot), with: .color(jointColor))
                }
            }
        }
    }
}
